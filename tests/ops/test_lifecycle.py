"""Graceful shutdown under load and zero-downtime reloads, against real server processes."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
from servers import LiveServer

from models.bundle import read_bundle
from models.runtime import BundleScorer


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_sigterm_answers_every_accepted_request_then_exits_0(tiny_bundle: Path, serve: Any) -> None:
    # Pairs linger up to 1.5 s for batch mates, so all accepted requests are still queued when SIGTERM lands.
    env = {"RM_MAX_WAIT_MS": "1500", "RM_MAX_BATCH_SIZE": "512", "RM_MAX_BATCH_TOKENS": "1000000"}
    server = serve(tiny_bundle, "--precision", "fp32", **env)
    accepted = 48

    async def main() -> tuple[list[httpx.Response], list[object]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            first = [
                asyncio.ensure_future(http.post("/score", json={"items": [{"prompt": f"q{i}", "completion": "a"}]}))
                for i in range(accepted)
            ]
            while metric(server.url, "rm_queue_depth") < accepted:
                await asyncio.sleep(0.02)
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.1)
            late = []
            for _ in range(5):  # new work after SIGTERM: refused (503) or not connected, never a 500
                try:
                    late.append(await http.post("/score", json={"items": [{"prompt": "late", "completion": "x"}]}))
                except httpx.TransportError as e:
                    late.append(e)
            return list(await asyncio.gather(*first)), late

    answered, late = asyncio.run(main())
    assert [r.status_code for r in answered] == [200] * accepted  # every accepted request answered
    for r in late:
        assert isinstance(r, httpx.TransportError) or r.status_code == 503, r
    assert server.proc.wait(30) == 0


def test_readyz_turns_503_at_once_on_sigterm_while_work_is_still_served(tiny_bundle: Path, serve: Any) -> None:
    # The shutdown delay keeps the listener open after SIGTERM, so the probe can be observed failing while
    # requests routed here by a load balancer that has not noticed yet are still answered.
    server = serve(tiny_bundle, "--precision", "fp32", RM_SHUTDOWN_DELAY_SECONDS="2")
    item = {"items": [{"prompt": "p", "completion": "c"}]}
    assert httpx.get(server.url + "/readyz", timeout=10).status_code == 200
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    ready = httpx.get(server.url + "/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["type"] == "not_ready"
    assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
    assert httpx.post(server.url + "/score", json=item, timeout=10).status_code == 200
    assert server.proc.wait(30) == 0


def test_reload_swaps_models_without_dropping_requests(tiny_bundle: Path, second_bundle: Path, tmp_path: Path) -> None:
    root = os.path.commonpath([tiny_bundle, second_bundle, tmp_path])  # reloads stay inside the model root
    server = LiveServer(
        tiny_bundle, "--precision", "fp32", "--api-key", "k", "--admin-api-key", "adm", "--model-root", root
    )
    server.wait_ready()
    auth = {"Authorization": "Bearer k"}
    admin = {"Authorization": "Bearer adm"}
    item = {"items": [{"prompt": "Question 1: tea?", "completion": "tea is kind."}]}
    old_score = float(
        BundleScorer(read_bundle(tiny_bundle), "fp32", device="cpu").score(["Question 1: tea?"], ["tea is kind."])[0]
    )
    new_score = float(
        BundleScorer(read_bundle(second_bundle), "fp32", device="cpu").score(["Question 1: tea?"], ["tea is kind."])[0]
    )
    assert abs(old_score - new_score) > 1e-3
    try:

        async def main() -> tuple[list[httpx.Response], httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=auth) as http:
                stop = False

                async def hammer() -> list[httpx.Response]:
                    out = []
                    while not stop:
                        out.append(await http.post("/score", json=item))
                    return out

                workers = [asyncio.ensure_future(hammer()) for _ in range(8)]
                await asyncio.sleep(0.3)
                reload = await http.post("/admin/reload", json={"model_dir": str(second_bundle)}, headers=admin)
                await asyncio.sleep(0.3)
                stop = True
                return [r for w in workers for r in await w], reload

        responses, reload = asyncio.run(main())
        assert reload.status_code == 200, reload.text
        assert reload.json()["model_id"] == read_bundle(second_bundle).meta.model_id
        statuses = [r.status_code for r in responses]
        assert set(statuses) == {200} and len(responses) > 16, [
            (r.status_code, r.text) for r in responses if r.status_code != 200
        ][:5]
        scores = {round(r.json()["scores"][0], 5) for r in responses}
        assert scores <= {round(old_score, 5), round(new_score, 5)}  # each response from one model, never mixed
        models = {r.json()["model"] for r in responses}
        assert models == {read_bundle(tiny_bundle).meta.model_id, read_bundle(second_bundle).meta.model_id}
        after = httpx.post(server.url + "/score", json=item, headers=auth).json()
        assert abs(after["scores"][0] - new_score) <= 1e-6
        info = httpx.get(server.url + "/info").json()
        assert info["model_id"] == read_bundle(second_bundle).meta.model_id
        assert f'model_id="{info["model_id"]}"' in httpx.get(server.url + "/metrics").text

        broken = tmp_path / "broken"
        broken.mkdir()
        refused = httpx.post(server.url + "/admin/reload", json={"model_dir": str(broken)}, headers=admin)
        assert refused.status_code == 422 and refused.json()["type"] == "reload_refused"
        assert "still serving" in refused.json()["error"]
        assert httpx.post(server.url + "/score", json=item, headers=auth).status_code == 200
        assert httpx.post(server.url + "/admin/reload", json={}).status_code == 401  # behind the admin key
        # The scoring key is not the admin key: a trainer that can score cannot swap the model.
        assert httpx.post(server.url + "/admin/reload", json={}, headers=auth).status_code == 401
    finally:
        server.stop()


def test_idle_keep_alive_connections_close_after_the_setting(tiny_bundle: Path) -> None:
    """RM_KEEP_ALIVE_SECONDS reaches uvicorn: an idle connection stays open within it and is closed after it."""
    server = LiveServer(tiny_bundle, env={**os.environ, "RM_KEEP_ALIVE_SECONDS": "2"})
    try:
        server.wait_ready()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        sockets = []
        for _ in range(2):  # reused within the timeout: answered on the same connection
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            assert response.status == 200 and response.read()
            sockets.append(conn.sock)
            time.sleep(0.5)
        assert sockets[0] is sockets[1] is not None
        time.sleep(3)  # idle past it: the server hangs up (end of stream, not a timeout)
        assert sockets[0].recv(1) == b""
        conn.close()
    finally:
        server.stop()

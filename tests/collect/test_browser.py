"""The annotation page in headless Chromium: log in, answer with keys, undo, skip, switch language, check the DB."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from labelling import CLI, SHARED_DATA, make_db, start_server
from servers import free_port

from collect.candidates import Candidates
from collect.db import connect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
HOSTILE_PROMPT = "<b>Which is safe?</b>"
HOSTILE = ["<script>window.__xss = 1</script>", '<img src=x onerror="window.__xss = 2">\n```js\nalert(1)\n```']
ZH_FALLBACK = [  # used when the shared folder (with the tutorial's own example) is absent
    {"question": "什么是字典？", "chosen": "字典是键值对的可变映射，键必须可哈希。", "rejected": "字典存数据。"},
    {"question": "什么是集合？", "chosen": "集合是无序、元素唯一的可变容器。", "rejected": "集合存数据。"},
]


def _skip_reason() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not CHROMIUM or not CHROMEDRIVER:
        return "no Chromium/chromedriver on this machine (apt-get install chromium chromium-driver; .ci/run does)"
    return None


SKIP_REASON = _skip_reason()
# The other browser modules (test_browser_*.py) import this mark and the helpers below.
needs_browser = pytest.mark.skipif(SKIP_REASON is not None, reason=str(SKIP_REASON))
pytestmark = needs_browser


@contextmanager
def chrome(profile: Path) -> Iterator[Any]:
    """Headless Chromium through chromedriver; its console is kept for the tests to read."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        "--lang=en-US",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def viewport(driver: Any, width: int, height: int, phone: bool = False) -> None:
    """Exactly this CSS viewport; `phone`: a mobile layout viewport and a touch screen (pointer: coarse)."""
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": phone}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": phone, "maxTouchPoints": 5})


@dataclass
class Site:
    url: str
    db: Path
    tokens: dict[str, str]


@contextmanager
def site(folder: Path, found: Candidates, names: list[str], per_item: int = 1, *extra: str) -> Iterator[Site]:
    """`collect serve` over a new database holding `found`, one token per annotator name."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "labels.sqlite"
    tokens = make_db(db, found, names)
    port = free_port()
    server = start_server(db, port, per_item, *extra)
    try:
        yield Site(f"http://127.0.0.1:{port}", db, tokens)
    finally:
        server.kill()
        server.wait(10)


def until(driver: Any, condition: Callable[[Any], Any], timeout: float = 15) -> Any:
    """`condition(driver)` once it is truthy, polled every 50 ms (WebDriverWait's 0.5 s would dominate the tests)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def sign_in(driver: Any, url: str, token: str) -> None:
    """Open the page afresh (nothing left from an earlier test on the same port) and log in with `token`."""
    from selenium.webdriver.common.by import By

    driver.get(url + "/healthz")  # the origin, without the page: a page's own login could store its token again
    driver.execute_script("localStorage.clear(); sessionStorage.clear()")
    driver.get(url + "/")
    driver.find_element(By.ID, "token").send_keys(token + "\n")
    until(
        driver,
        lambda d: d.execute_script(
            "return !document.getElementById('task').hidden || !document.getElementById('done').hidden"
        ),
    )


def live_answers(db: Path) -> int:
    conn = connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM answers WHERE undone IS NULL").fetchone()[0])
    finally:
        conn.close()


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def screenshot(driver: Any, name: str) -> None:
    """Saved into $COLLECT_SCREENSHOTS when it is set, for a person to look at; nothing otherwise."""
    folder = os.environ.get("COLLECT_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chrome(tmp_path / "profile") as driver:
        yield driver


def tutorial_source(tmp_path: Path) -> Path:
    shared = SHARED_DATA / "tutorial_example.json"
    if shared.exists():
        return shared
    path = tmp_path / "tutorial.json"
    path.write_text(json.dumps(ZH_FALLBACK, ensure_ascii=False, indent=4) + "\n", encoding="utf-8")
    return path


def test_annotate_in_headless_chromium(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    source = tutorial_source(tmp_path)
    records = json.loads(source.read_text(encoding="utf-8"))
    found = Candidates()
    for r in records:
        found.add(r["question"], [r["chosen"], r["rejected"]])
    found.add(HOSTILE_PROMPT, HOSTILE)
    db = tmp_path / "labels.sqlite"
    token = make_db(db, found, ["李雷"])["李雷"]
    port = free_port()
    server = start_server(db, port, 1)
    wait = WebDriverWait(browser, 15, poll_frequency=0.05)
    js = browser.execute_script
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        browser.find_element(By.ID, "token").send_keys(token + "\n")
        wait.until(lambda d: js("return !document.getElementById('task').hidden"))
        assert "李雷" in browser.find_element(By.ID, "who").text

        def shown() -> tuple[str, str, str, str]:
            return js(
                "const g = (i) => document.getElementById(i); return [g('task').dataset.assignment,"
                " g('prompt').textContent, g('a').textContent, g('b').textContent]"
            )

        def state() -> str:
            # The message too: a pair skipped when nothing else is left comes straight back (same id, same counts).
            return js(
                "return ['task', 'counts', 'message'].map((i) => document.getElementById(i)).map((e) =>"
                " e.dataset.assignment || e.textContent).join('|')"
            )

        def press(key: str) -> None:
            before = state()
            ActionChains(browser).send_keys(key).perform()
            wait.until(lambda d: state() != before)

        chosen = {r["question"]: r["chosen"] for r in records}
        undone = skipped = False
        while js("return document.getElementById('done').hidden"):
            _, prompt, a, b = shown()
            if prompt == HOSTILE_PROMPT:
                # Untrusted text is shown as text: the markup is visible, nothing ran, no element was made.
                # The fence's language shows as a label ("js") above its code.
                shown_code = HOSTILE[1].replace("\n```js\n", "js").replace("\n```", "")
                assert sorted([a, b]) == sorted([HOSTILE[0], shown_code])
                assert js(
                    "return window.__xss === undefined && document.querySelectorAll('#a img, #b img, "
                    "#a script, #b script').length === 0"
                )
                assert js("return document.querySelectorAll('#a pre code, #b pre code').length") == 1
                # Skipped pairs come back once nothing fresh is left: skip it once, then call it a tie (not exported).
                press("t" if skipped else "s")
                skipped = True
                continue
            good = "a" if a == chosen[prompt] else "b"
            if not undone:  # answer wrongly first, then take it back with U: the export must not see it
                press("b" if good == "a" else "a")
                press("u")
                assert shown()[1] == prompt
                undone = True
            press(good)

        browser.find_element(By.ID, "lang").click()
        assert browser.find_element(By.TAG_NAME, "h1").text == "哪个回答更好？"
        assert browser.find_element(By.ID, "done").text == "没有需要你比较的内容了。谢谢！"
        assert "已回答 3" in browser.find_element(By.ID, "counts").text
        errors = console_errors(browser)
        assert not errors, errors
        if os.environ.get("COLLECT_SCREENSHOT"):
            browser.save_screenshot(os.environ["COLLECT_SCREENSHOT"])
    finally:
        server.kill()
        server.wait(10)

    rows = connect(db).execute("SELECT choice, undone IS NOT NULL AS undone FROM answers ORDER BY id").fetchall()
    assert sorted((r["choice"] == "skip", r["undone"]) for r in rows) == [(0, 0), (0, 0), (0, 0), (0, 1), (1, 1)]
    out = tmp_path / "prefs.json"
    cmd = [*CLI, "export", "--db", str(db), "--format", "tutorial", "--out", str(out)]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert out.read_bytes() == source.read_bytes()  # the Chinese records, byte for byte

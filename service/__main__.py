"""python -m service: check the settings and the bundle, then serve with uvicorn (draining on SIGTERM)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .core.settings import Settings

BACKSTOP_SECONDS = 5
DRAIN_OVERRUN = 3  # exit status when accepted work had to be refused at the drain deadline

if TYPE_CHECKING:
    from models.serving import CheckedScorer


def parse_args(argv: Sequence[str] | None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve a reward-model bundle. Every flag also reads from its RM_* environment variable "
        "(e.g. RM_MODEL_DIR, RM_PORT); flags win.",
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=field.description)
        else:  # values stay strings here: Settings validates and converts them, with one-line errors
            parser.add_argument(flag, default=None, help=field.description)
    args = parser.parse_args(argv)
    return {k: v for k, v in vars(args).items() if v is not None}


def open_or_explain(settings: Settings) -> tuple[CheckedScorer | None, str]:
    """Read the bundle, open its ONNX session and re-score its reference probes, once: (the opened model, "") or
    (None, the problem in one line). The server then serves this very session."""
    from models.bundle import BundleError

    from .core.models import open_bundle

    try:
        return open_bundle(str(settings.model_dir), settings), ""
    except BundleError as e:
        return None, str(e)
    except Exception as e:  # a graph or provider ONNX Runtime refuses
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return None, f"{settings.model_dir}: the model cannot be loaded: {type(e).__name__}: {first_line}"


def check_recipe(settings: Settings) -> str:
    """'' when the settings' recipe (if any) is valid and has the model it needs, else the problem in one line."""
    if settings.reward_recipe is None:
        return ""
    from .core.components import specs
    from .core.recipe import RecipeError, load_recipe

    try:
        recipe = load_recipe(settings.reward_recipe, specs())
    except RecipeError as e:
        return str(e)
    if recipe.needs_model and settings.model_dir is None:
        return f"{settings.reward_recipe}: the recipe has a `model` component: give the bundle (RM_MODEL_DIR)"
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings(**parse_args(argv))
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}" for err in e.errors())
        print(f"error: invalid settings: {problems}", file=sys.stderr)
        return 2

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Refuse a bad recipe or bundle with one line before binding a port: Kubernetes restarts us, nobody reads a trace.
    problem = check_recipe(settings)
    if problem:
        print(f"error: cannot serve: {problem}", file=sys.stderr)
        return 2
    opened = None
    if settings.model_dir is not None:
        opened, problem = open_or_explain(settings)
        if opened is None:
            print(f"error: cannot serve: {problem}", file=sys.stderr)
            return 2

    import uvicorn

    from .app import create_app
    from .web.connections import connection_limit, guarded

    if settings.max_queue_seconds and settings.drain_timeout < settings.max_queue_seconds:
        logging.getLogger("service").warning(
            "RM_DRAIN_SECONDS (%g) is shorter than RM_MAX_QUEUE_SECONDS (%g): on SIGTERM, requests the queue "
            "admitted may be answered 503 instead of scored",
            settings.drain_timeout,
            settings.max_queue_seconds,
        )
    app = create_app(settings, opened)
    lifecycle = app.state.lifecycle

    class DrainingServer(uvicorn.Server):
        """On the first SIGTERM: /readyz turns 503 at once; after the shutdown delay, new work is refused and
        uvicorn stops listening and drains what was accepted. A second signal skips the delay."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            delay = settings.shutdown_delay_seconds
            if lifecycle.draining or delay <= 0:
                self._stop(sig, frame)
                return
            lifecycle.drain()
            timer = threading.Timer(delay, self._stop, (sig, frame))
            timer.daemon = True
            timer.start()

        def _stop(self, sig: int, frame: FrameType | None) -> None:
            app.state.stop()  # new work refused, and the drain's deadline starts now
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn re-raises the captured SIGTERM after its graceful shutdown, so the process would die by
            # the signal; a drain that finished is a clean exit, status 0 (what orchestrators and tests expect).
            with super().capture_signals():
                yield
                captured = getattr(self, "_captured_signals", None)
                if isinstance(captured, list):
                    captured.clear()

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # A backstop only: the app's own drain answers every open request (scored, or 503) by RM_DRAIN_SECONDS;
        # uvicorn's cut, later, would answer the rest with plain-text 500s.
        timeout_graceful_shutdown=int(settings.drain_timeout) + BACKSTOP_SECONDS,
        timeout_keep_alive=settings.keep_alive_seconds,
        limit_concurrency=connection_limit(settings.max_connections),
        http=guarded(
            settings.header_timeout_seconds,
            settings.max_header_bytes,
            app.state.metrics.rejected.labels("connections").inc,
        ),
        access_log=False,
    )
    server = DrainingServer(config)
    try:
        server.run()
    except Exception as e:  # a lifespan failure (e.g. the session cannot be created) ends here
        print(f"error: cannot serve: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if not server.started:
        return 1
    refused = app.state.models.refused
    if refused:
        print(f"error: the drain deadline passed: {refused} admitted pairs were answered 503", file=sys.stderr)
        return DRAIN_OVERRUN
    return 0


if __name__ == "__main__":
    sys.exit(main())

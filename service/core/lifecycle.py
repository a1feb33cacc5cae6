"""Lifecycle: the one state of the server (starting, ready, draining, stopping, stopped), written by the lifespan and
the signal handler, read by the probes and the scoring endpoints."""

from __future__ import annotations

import enum

from .errors import NotReady


class Phase(enum.Enum):
    STARTING = "starting"  # loading and warming up the model
    READY = "ready"
    DRAINING = "draining"  # SIGTERM seen: /readyz answers 503 so balancers stop routing here; work is still served
    STOPPING = "stopping"  # new scoring work is refused; accepted requests finish
    STOPPED = "stopped"


class Lifecycle:
    def __init__(self) -> None:
        self.phase = Phase.STARTING

    def ready(self) -> None:
        self.phase = Phase.READY

    def drain(self) -> None:
        """Tell balancers to go away, keep serving (the shutdown delay)."""
        if self.phase in (Phase.STARTING, Phase.READY):
            self.phase = Phase.DRAINING

    def stop(self) -> None:
        """Refuse new work from now on."""
        if self.phase is not Phase.STOPPED:
            self.phase = Phase.STOPPING

    def stopped(self) -> None:
        self.phase = Phase.STOPPED

    @property
    def draining(self) -> bool:
        """Past READY: SIGTERM was seen."""
        return self.phase in (Phase.DRAINING, Phase.STOPPING, Phase.STOPPED)

    def check_accepting(self) -> None:
        """NotReady (503) unless new scoring work may start now."""
        if self.phase in (Phase.READY, Phase.DRAINING):
            return
        if self.phase is Phase.STARTING:
            raise NotReady("warming up")
        raise NotReady("shutting down: not accepting new work")

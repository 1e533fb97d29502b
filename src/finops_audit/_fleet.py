"""The forwarders of one trail, started, woken and closed by the writer's hooks.

Why a module of its own: the writer must not know the forwarding package, and
the service must not be what the writer calls back. The writer outlives an
unclosed service (it is drained at interpreter exit), so its hooks refer to
this small object, never to the service: a handle collected without
``close()`` is not kept alive by the writer it used.
"""

from __future__ import annotations

import time

from ._writer import WriterHooks
from .forwarding._forwarder import Forwarder

__all__ = ["Fleet"]


class Fleet:
    """The forwarders of one trail (central store, OTLP), in the order they were built."""

    def __init__(self, forwarders: list[Forwarder], timeout: float) -> None:
        self.forwarders = forwarders
        self._timeout = timeout

    def hooks(self) -> WriterHooks:
        """What the writer calls: on start, after each commit, at close."""
        return WriterHooks(started=self.start, committed=self.notify, closed=self.close)

    def start(self) -> None:
        for forwarder in self.forwarders:
            forwarder.start()

    def notify(self) -> None:
        for forwarder in self.forwarders:
            forwarder.notify()

    def close(self) -> None:
        """Close every forwarder within the one ``forward_timeout`` they share."""
        deadline = time.monotonic() + self._timeout
        for forwarder in self.forwarders:
            forwarder.close(max(deadline - time.monotonic(), 0.0))

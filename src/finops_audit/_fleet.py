"""The forwarders of one trail, started, woken and closed by the writer's hooks.

Why a module of its own: the writer must not know the forwarding package, and
the service must not be what the writer calls back. The writer outlives an
unclosed service (it is drained at interpreter exit), so its hooks refer to
this small object, never to the service: a handle collected without
``close()`` is not kept alive by the writer it used.
"""

from __future__ import annotations

import time
from dataclasses import replace

from ._writer import AuditStats, WriterHooks
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

    def with_forwarding(self, stats: AuditStats) -> AuditStats:
        """The writer's ``stats`` with the forwarders' lag and errors, worst and per sink."""
        if not self.forwarders:
            return stats
        per_sink = {f.sink_name: f.stats() for f in self.forwarders}
        errors = [f"{name}: {s.last_error}" for name, s in per_sink.items() if s.last_error]
        return replace(
            stats,
            forward_lag_entries=max(s.lag_entries for s in per_sink.values()),
            forward_lag_seconds=max(s.lag_seconds for s in per_sink.values()),
            forward_last_error="; ".join(errors) or None,
            forwarding=per_sink,
        )

    def close(self) -> None:
        """Close every forwarder within the one ``forward_timeout`` they share."""
        deadline = time.monotonic() + self._timeout
        for forwarder in self.forwarders:
            forwarder.close(max(deadline - time.monotonic(), 0.0))

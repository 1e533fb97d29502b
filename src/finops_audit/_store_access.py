"""How one service handle reaches the store its queries read, and sees its own writes.

Why a module of its own: every read and every maintenance call must answer
the same two questions the same way. *Which store?* The central one when
``AUDIT_DB_URL`` is set (run on its own loop thread), else the SQLite file
through the shared writer's connection, so a query never opens a second
connection beside the writer. *What has to be there first?* Every entry
accepted before the call (read-your-writes): the writer is flushed, and with a
central store the rows are forwarded to it, from this trail and from the other
trails of the process that forward there. Encrypted fields are opened (or
marked) on the way out, in one place, so no query path can forget to.

Only the central store's forwarder is waited for when catching up: an OTLP
collector being down must not stop queries.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, cast

from . import _trails
from ._decrypting import DecryptingReader
from ._fieldcrypt import FieldOpener
from ._fleet import Fleet
from .config import AuditSettings
from .exceptions import AuditClosedError, AuditTimeoutError
from .forwarding._forwarder import Forwarder
from .storage._loop import LoopThread
from .storage.base import AuditReader

if TYPE_CHECKING:
    from .storage.postgres import PostgresAuditStore

__all__ = ["Ask", "StoreAccess"]

T = TypeVar("T")

#: A question for a store: called with the store, returns the coroutine that answers.
Ask = Callable[[AuditReader], Coroutine[Any, Any, T]]


class StoreAccess:
    """One handle's way to its store: open or closed, catch up, ask, forward."""

    def __init__(
        self,
        settings: AuditSettings,
        trail: _trails.Trail,
        central: PostgresAuditStore | None,
        opener: FieldOpener,
        read_only: bool,
    ) -> None:
        self.settings = settings
        self.trail = trail
        self.writer = trail.writer
        self.fleet: Fleet = trail.fleet  # type: ignore[assignment]
        self.central = central
        self.opener = opener
        self.read_only = read_only
        #: True once this handle is closed (the shared writer may still run).
        self.handle_closed = False
        self._loop = LoopThread("finops-audit-central") if central is not None else None

    @property
    def closed(self) -> bool:
        return self.handle_closed or self.writer.closed

    def check_open(self) -> None:
        if self.closed:
            raise AuditClosedError("this audit service is closed; create a new AuditService")

    # ------------------------------------------------------------------ read-your-writes

    def catch_up(self) -> None:
        """Every entry accepted so far is in the store queries read.

        A read-only handle also flushes the writer a service of this process
        keeps open on its file.
        """
        self.check_open()
        wait = self.settings.close_timeout
        self.writer.flush(timeout=wait)
        if self.read_only:
            _flush_writing(self.trail.key, wait)
        if self.central is None:
            return
        if self.writer.stats().accepted:
            self.forward(wait, central_only=True)
        for peer in _trails.trails_to(self.settings):
            if peer is not self.trail and not peer.writer.closed:
                _catch_up_peer(peer, wait)

    async def acatch_up(self) -> None:
        self.check_open()
        wait = self.settings.close_timeout
        await self.writer.aflush(timeout=wait)
        if self.read_only:
            await asyncio.to_thread(_flush_writing, self.trail.key, wait)
        if self.central is None:
            return
        if self.writer.stats().accepted:
            await self.aforward(wait, central_only=True)
        for peer in _trails.trails_to(self.settings):
            if peer is not self.trail and not peer.writer.closed:
                await asyncio.to_thread(_catch_up_peer, peer, wait)

    # ------------------------------------------------------------------ asking the store

    def ask(self, ask: Ask[T]) -> T:
        """Run ``ask`` on the store queries read: the central one if configured."""
        ask = self._opening(ask)
        if self.central is not None and self._loop is not None:
            self.check_open()
            try:
                return self._loop.run(ask(self.central))
            except concurrent.futures.CancelledError:
                raise AuditClosedError("the audit service was closed during the query") from None
        self.check_open()
        return self.writer.run(ask)

    async def aask(self, ask: Ask[T]) -> T:
        ask = self._opening(ask)
        if self.central is not None and self._loop is not None:
            self.check_open()
            try:
                return await self._loop.arun(ask(self.central))
            except asyncio.CancelledError:
                if self.closed:
                    raise AuditClosedError(
                        "the audit service was closed during the query"
                    ) from None
                raise
        self.check_open()
        return await self.writer.arun(ask)

    def read(self, ask: Ask[T]) -> T:
        """Run ``ask`` after catching up: a query sees every call that returned."""
        self.catch_up()
        return self.ask(ask)

    async def aread(self, ask: Ask[T]) -> T:
        await self.acatch_up()
        return await self.aask(ask)

    def _opening(self, ask: Ask[T]) -> Ask[T]:
        """``ask`` over a view of the store whose entries have encrypted fields opened."""
        opener = self.opener

        def opened(store: AuditReader) -> Coroutine[Any, Any, T]:
            return ask(cast(AuditReader, DecryptingReader(store, opener)))

        return opened

    # ------------------------------------------------------------------ forwarding

    def forward(self, wait: float, central_only: bool = False) -> None:
        """Flush, then wait up to ``wait`` seconds in all for the forwarders to deliver."""
        deadline = time.monotonic() + wait
        self.writer.flush(timeout=wait)
        if not self.fleet.forwarders:
            return
        for forwarder in self._forwarders(central_only):
            forwarder.wait_forwarded(max(deadline - time.monotonic(), 0.0))

    async def aforward(self, wait: float, central_only: bool = False) -> None:
        deadline = time.monotonic() + wait
        await self.writer.aflush(timeout=wait)
        if not self.fleet.forwarders:
            return
        forwarders = await asyncio.to_thread(self._forwarders, central_only)
        for forwarder in forwarders:
            goal = await asyncio.to_thread(forwarder.goal)
            # Short slices in a thread: a cancelled aforward leaves no long wait behind.
            while True:
                left = deadline - time.monotonic()
                try:
                    await asyncio.to_thread(forwarder.wait_forwarded, min(max(left, 0), 0.2), goal)
                    break
                except AuditTimeoutError:
                    if time.monotonic() >= deadline:
                        behind = await asyncio.to_thread(forwarder.behind, goal)
                        raise forwarder.late(wait, behind) from None

    def _forwarders(self, central_only: bool) -> list[Forwarder]:
        self.check_open()
        self.writer.start()
        return [f for f in self.fleet.forwarders if not central_only or f.sink_name == "postgres"]

    def stop_central(self) -> None:
        if self._loop is not None and self.central is not None:
            self._loop.stop(self.central.close())


def _flush_writing(key: str, wait: float) -> None:
    """A read-only service reads what a writer of this process accepted on its file."""
    trail = _trails.writing(key)
    if trail is None:
        return
    try:
        trail.writer.flush(timeout=wait)
    except AuditClosedError:
        pass  # closed meanwhile: it drained


def _catch_up_peer(peer: _trails.Trail, wait: float) -> None:
    """Another trail of this process forwarding to the same central store."""
    deadline = time.monotonic() + wait
    try:
        peer.writer.flush(timeout=wait)
    except AuditClosedError:
        return
    fleet: Fleet = peer.fleet  # type: ignore[assignment]
    if not peer.writer.stats().accepted:
        return
    for forwarder in fleet.forwarders:
        if forwarder.sink_name == "postgres":
            forwarder.wait_forwarded(max(deadline - time.monotonic(), 0.0))

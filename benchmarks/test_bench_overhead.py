"""Benchmark 1: what auditing adds to the caller's path, per call.

Each case times the same tool undecorated (``baseline``) and decorated
(``audited``) in the same run; ``summarize.py`` subtracts the two medians.
Beside them, one stdlib ``logging.info`` through ``QueueHandler`` +
``QueueListener`` (the listener formats into a ``StringIO``), the usual
"cheap, asynchronous" logging a team would otherwise reach for.

* ``sustained``: rounds of 2,000 back-to-back calls while the writer works
  concurrently (default batch 1,000, so it is woken once a round and writes
  during the second half of it); the queue is flushed before each round,
  outside the timed region, and bounded at 1,000,000 with the ``drop`` policy
  (a fixed bound; the default ``block`` policy adapts it to the writer's rate),
  so no call ever waits: ``dropped == 0`` is asserted. Median round / 2,000.
* ``isolated``: the writer is flushed and left to go idle (2 ms), then one call
  is timed. Async calls are driven with ``coro.send(None)`` (they never
  suspend), so no event-loop overhead hides the difference.
"""

from __future__ import annotations

import asyncio
import io
import logging
import logging.handlers
import queue
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from _support import (
    BURST,
    KWARGS,
    async_burst,
    check_tag_compliance,
    drive,
    list_policies,
    settings_info,
    started,
    sync_burst,
)
from finops_audit import AuditService, audit_tool, audit_tool_sync

SUSTAINED_ROUNDS = 150
ISOLATED_ROUNDS = 1_000
IDLE_PAUSE = 0.002


@pytest.fixture
def svc(service_factory: Callable[..., AuditService]) -> AuditService:
    # A fixed bound far above a round (the "block" policy would adapt its bound to
    # the writer's measured rate): no call in a timed round ever waits or drops.
    return started(service_factory(queue_size=1_000_000, overflow_policy="drop"))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


class QueueLogging:
    """The stdlib recipe: ``QueueHandler`` on the logger, ``QueueListener`` on a thread."""

    def __init__(self) -> None:
        self.queue: queue.Queue[logging.LogRecord] = queue.Queue()
        self.stream = io.StringIO()
        target = logging.StreamHandler(self.stream)
        target.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        self.listener = logging.handlers.QueueListener(self.queue, target)
        self.logger = logging.getLogger("finops_audit.bench.queuehandler")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.handler = logging.handlers.QueueHandler(self.queue)
        self.logger.addHandler(self.handler)
        self.listener.start()

    def call(self) -> None:
        self.logger.info("tool %s called with %s", "check_tag_compliance", KWARGS)

    def drain(self) -> None:
        self.queue.join()  # QueueListener marks each record done
        self.stream.seek(0)
        self.stream.truncate()

    def stop(self) -> None:
        self.listener.stop()
        self.logger.removeHandler(self.handler)
        self.handler.close()


@pytest.fixture
def qlog() -> Iterator[QueueLogging]:
    ql = QueueLogging()
    yield ql
    ql.stop()


def _info(flavor: str, role: str, mode: str, per_round: int) -> dict[str, Any]:
    return {
        "figure": "overhead",
        "mode": mode,
        "flavor": flavor,
        "role": role,
        "calls_per_round": per_round,
    }


# ---------------------------------------------------------------------- sustained


@pytest.mark.benchmark(group="1-overhead-sustained")
@pytest.mark.parametrize("role", ["baseline", "audited"])
def test_sync_sustained(benchmark: Any, svc: AuditService, role: str) -> None:
    fn = audit_tool_sync(service=svc)(list_policies) if role == "audited" else list_policies
    benchmark.extra_info.update(_info("sync", role, "sustained", BURST))
    benchmark.extra_info.update(settings_info(svc))
    benchmark.pedantic(sync_burst(fn), setup=svc.flush, rounds=SUSTAINED_ROUNDS, warmup_rounds=3)
    svc.flush()
    assert svc.stats().dropped == 0


@pytest.mark.benchmark(group="1-overhead-sustained")
@pytest.mark.parametrize("role", ["baseline", "audited"])
def test_async_sustained(
    benchmark: Any, svc: AuditService, loop: asyncio.AbstractEventLoop, role: str
) -> None:
    fn = check_tag_compliance
    if role == "audited":
        fn = audit_tool(service=svc)(check_tag_compliance)
    benchmark.extra_info.update(_info("async", role, "sustained", BURST))
    benchmark.extra_info.update(settings_info(svc))
    benchmark.pedantic(
        async_burst(loop, fn), setup=svc.flush, rounds=SUSTAINED_ROUNDS, warmup_rounds=3
    )
    svc.flush()
    assert svc.stats().dropped == 0


@pytest.mark.benchmark(group="1-overhead-sustained")
def test_queuehandler_sustained(benchmark: Any, qlog: QueueLogging) -> None:
    call = qlog.call

    def burst() -> None:
        for _ in range(BURST):
            call()

    benchmark.extra_info.update(_info("logging", "queuehandler", "sustained", BURST))
    benchmark.pedantic(burst, setup=qlog.drain, rounds=SUSTAINED_ROUNDS, warmup_rounds=3)


@pytest.mark.benchmark(group="1-overhead-sustained")
def test_floor_sustained(benchmark: Any) -> None:
    """An in-run floor: the smallest audit a decorator can do (DESIGN.md's prototype).

    Two clocks, ``orjson.dumps`` of the keyword arguments, a 6-tuple and one
    ``deque.append``, written inline with no writer behind it. What this costs
    over the baseline is what the machine charges for any decorator of this
    design, which puts the absolute 2 µs target in perspective.
    """
    pending: deque[tuple[Any, ...]] = deque()
    append = pending.append
    dumps = orjson.dumps
    time_ns, perf_ns = time.time_ns, time.perf_counter_ns

    def floor(**kw: Any) -> int:
        wall = time_ns()
        params = dumps(kw)
        start = perf_ns()
        result = list_policies(**kw)
        append(("list_policies", wall, perf_ns() - start, params, "SUCCESS", None))
        return result

    benchmark.extra_info.update(_info("sync", "floor", "sustained", BURST))
    benchmark.pedantic(
        sync_burst(floor), setup=pending.clear, rounds=SUSTAINED_ROUNDS, warmup_rounds=3
    )


# ---------------------------------------------------------------------- isolated


def _idle(svc: AuditService) -> Callable[[], None]:
    def setup() -> None:
        svc.flush()
        time.sleep(IDLE_PAUSE)  # let the writer finish its turn and go back to sleep

    return setup


@pytest.mark.benchmark(group="1-overhead-isolated")
@pytest.mark.parametrize("role", ["baseline", "audited"])
def test_sync_isolated(benchmark: Any, svc: AuditService, role: str) -> None:
    fn = audit_tool_sync(service=svc)(list_policies) if role == "audited" else list_policies
    kw = KWARGS

    def one() -> None:
        fn(**kw)

    benchmark.extra_info.update(_info("sync", role, "isolated", 1))
    benchmark.extra_info.update(settings_info(svc))
    benchmark.pedantic(one, setup=_idle(svc), rounds=ISOLATED_ROUNDS, warmup_rounds=20)


@pytest.mark.benchmark(group="1-overhead-isolated")
@pytest.mark.parametrize("role", ["baseline", "audited"])
def test_async_isolated(benchmark: Any, svc: AuditService, role: str) -> None:
    fn = check_tag_compliance
    if role == "audited":
        fn = audit_tool(service=svc)(check_tag_compliance)
    kw = KWARGS

    def one() -> None:
        drive(fn(**kw))

    benchmark.extra_info.update(_info("async", role, "isolated", 1))
    benchmark.extra_info.update(settings_info(svc))
    benchmark.pedantic(one, setup=_idle(svc), rounds=ISOLATED_ROUNDS, warmup_rounds=20)


@pytest.mark.benchmark(group="1-overhead-isolated")
def test_queuehandler_isolated(benchmark: Any, qlog: QueueLogging) -> None:
    def setup() -> None:
        qlog.drain()
        time.sleep(IDLE_PAUSE)

    benchmark.extra_info.update(_info("logging", "queuehandler", "isolated", 1))
    benchmark.pedantic(qlog.call, setup=setup, rounds=ISOLATED_ROUNDS, warmup_rounds=20)

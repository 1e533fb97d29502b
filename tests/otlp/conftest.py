"""Fixtures of the OTLP tests: a local OTLP/HTTP receiver per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("opentelemetry.proto", reason="OTLP tests need opentelemetry-proto")

from .receiver import OtlpReceiver


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A started receiver on a free loopback port; stopped after the test."""
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()

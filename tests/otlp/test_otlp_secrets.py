"""Secrets in every field never reach an OTLP request body, nor its headers' echo.

The session of :mod:`tests.operations._secrets` is exported to a local
receiver, which keeps every request body (gzip undone); each body is searched
for each secret. The OTLP ``Authorization`` header itself is a secret of the
settings: it reaches the collector, and nothing else.
"""

from __future__ import annotations

from pathlib import Path

from finops_audit import AuditService
from tests.operations._secrets import absent, present, record_secrets

from .receiver import OtlpReceiver

TOKEN = "otlpHeaderZq9token"


def test_no_secret_in_any_otlp_request_body(otlp_receiver: OtlpReceiver, tmp_path: Path) -> None:
    service = AuditService(
        tmp_path / "buffer.db",
        otlp_endpoint=otlp_receiver.url,
        otlp_headers={"Authorization": f"Bearer {TOKEN}"},
        replica_id="replica-secrets",
    )
    try:
        count = record_secrets(service)
        service.forward(timeout=30)
        assert TOKEN not in repr(service) + repr(service.settings) + str(service.stats())
    finally:
        service.close()
    assert len(otlp_receiver.wait_for(count)) == count
    bodies = b"".join(otlp_receiver.bodies)
    absent(bodies, "the OTLP request bodies")
    present(bodies, "the OTLP request bodies")
    # the header went to the collector as configured
    assert {r.headers.get("authorization") for r in otlp_receiver.requests} == {f"Bearer {TOKEN}"}

"""Forwarding a replica's durable buffer to a central store or an OTLP collector.

With ``AUDIT_DB_URL`` (PostgreSQL) or ``AUDIT_OTLP_ENDPOINT`` set, the SQLite
file stays each replica's trail of record until its rows are delivered, and a
forwarder per destination ships them in order without loss or duplicates.
"""

from ._forwarder import ForwardStats
from .base import BUFFER_COLUMNS, BufferedRow, ForwardSink, ReplicaInfo

__all__ = ["BUFFER_COLUMNS", "BufferedRow", "ForwardSink", "ForwardStats", "ReplicaInfo"]

"""Storage back-ends behind the :class:`AuditStore` protocol."""

from .base import AuditStore, LogQuery, Row
from .sqlite import SQLiteAuditStore

__all__ = ["AuditStore", "LogQuery", "Row", "SQLiteAuditStore"]

"""finops_audit: a microsecond-cheap audit trail of every tool call an MCP server makes.

from finops_audit import AuditService, AuditStatus, audit_tool, audit_tool_sync

@audit_tool
async def check_tag_compliance(resource_types: list[str]) -> dict: ...

AuditService().get_logs(status=AuditStatus.FAILURE)
"""

from importlib.metadata import PackageNotFoundError, version

from ._writer import AuditStats
from .analytics import ErrorGroup, TimeBucket, ToolStats
from .config import AuditSettings
from .context import AuditContext, audit_context
from .decorators import audit_tool, audit_tool_sync
from .exceptions import (
    AuditClosedError,
    AuditConfigError,
    AuditError,
    AuditQueueFullError,
    AuditStorageError,
    AuditTimeoutError,
    AuditUnavailableError,
    AuditWriterError,
)
from .forwarding._forwarder import ForwardStats
from .models import AuditLogEntry, AuditStatus
from .service import AuditService, get_default_service, set_default_service

try:
    __version__ = version("finops-audit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AuditClosedError",
    "AuditConfigError",
    "AuditContext",
    "AuditError",
    "AuditLogEntry",
    "AuditQueueFullError",
    "AuditService",
    "AuditSettings",
    "AuditStats",
    "AuditStatus",
    "AuditStorageError",
    "AuditTimeoutError",
    "AuditUnavailableError",
    "AuditWriterError",
    "ErrorGroup",
    "ForwardStats",
    "TimeBucket",
    "ToolStats",
    "__version__",
    "audit_context",
    "audit_tool",
    "audit_tool_sync",
    "get_default_service",
    "set_default_service",
]

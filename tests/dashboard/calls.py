"""Audited calls made in another process: ``python calls.py DB TOOL COUNT [USER]``.

With ``AUDIT_DB_URL`` set (and ``AUDIT_REPLICA_ID``), the calls go to the fleet's
central store: the script waits until they are forwarded before it exits.
Prints ``done`` once every call has returned and is committed.
"""

from __future__ import annotations

import os
import sys

from finops_audit import AuditService, audit_context, audit_tool_sync


def main() -> None:
    db, tool_name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    user = sys.argv[4] if len(sys.argv) > 4 else "subprocess"
    svc = AuditService(db_path=db, handle_signals=False)

    @audit_tool_sync(service=svc, name=tool_name)
    def tool(i: int, region: str = "eu-west-1") -> int:
        return i

    with audit_context(user=user):
        for i in range(count):
            tool(i=i)
    if os.environ.get("AUDIT_DB_URL"):
        svc.forward(timeout=60)
    else:
        svc.flush()
    svc.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()

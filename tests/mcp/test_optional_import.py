"""The SDKs are optional extras: importing finops_audit never imports one.

Checked here, where an SDK is installed and so could be imported by mistake.
(Decorating a tool may import the installed SDK: that is how the decorators
find its request context; see ``finops_audit._mcp_context``.)
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("mcp")

from .conftest import installed_server_sdks

SDKS = installed_server_sdks()
PROBE = (
    "import sys, finops_audit, finops_audit.integrations, finops_audit.cli\n"
    "sdk = {m.split('.')[0] for m in sys.modules} & {'mcp', 'fastmcp', 'mcp_types'}\n"
    "print(','.join(sorted(sdk)))\n"
)


@pytest.mark.parametrize("sdk", SDKS)
def test_importing_finops_audit_imports_no_sdk(sdk: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "", proc.stdout

"""The finops_audit example: a FinOps tag-compliance MCP server (see ``server.py``)."""

"""``python -m examples.finops_server [--sdk ...]``: serve over stdio."""

from .server import main

main()

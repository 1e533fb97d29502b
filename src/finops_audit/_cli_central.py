"""``finops-audit central``: commands for the fleet's PostgreSQL store (a thin shell)."""

from __future__ import annotations

import click

from .config import load_settings
from .exceptions import AuditError

__all__ = ["central"]


@click.group()
def central() -> None:
    """Set up the central PostgreSQL store named by AUDIT_DB_URL."""


@central.command("init-roles")
@click.option(
    "--prefix", default="finops_audit", show_default=True, help="Role names: PREFIX_writer, ..."
)
@click.option(
    "--months-ahead",
    default=12,
    show_default=True,
    type=click.IntRange(0, 240),
    help="Monthly partitions to make ahead (writers cannot make them).",
)
@click.option(
    "--partitions-only",
    is_flag=True,
    help="Only make partitions (run monthly as the maintainer); no roles, no grants.",
)
@click.option("--print-sql", is_flag=True, help="Print the role SQL instead of running it.")
def init_roles(prefix: str, months_ahead: int, partitions_only: bool, print_sql: bool) -> None:
    """Create the schema, partitions, and the writer, reader and maintainer roles.

    Run once as an admin (superuser) with AUDIT_DB_URL; then give each component a
    login in its role, e.g. CREATE ROLE replica_7 LOGIN PASSWORD '...' IN ROLE
    finops_audit_writer, and use that user in its AUDIT_DB_URL.
    """
    from .storage._pg_roles import init_roles as run
    from .storage._pg_roles import role_statements

    try:
        if print_sql:
            click.echo("\n".join(s + ";" for s in role_statements(prefix)))
            return
        settings = load_settings()
        if settings.db_url is None:
            raise click.ClickException("set AUDIT_DB_URL to the central store (as an admin)")
        names = run(
            settings.db_url.get_secret_value(),
            prefix=prefix,
            months_ahead=months_ahead,
            create_roles=not partitions_only,
        )
    except (AuditError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # psycopg errors: one line, never the URL's password
        if type(exc).__module__.split(".")[0] != "psycopg":
            raise
        raise click.ClickException(f"init-roles failed: {str(exc).strip()}") from None
    if partitions_only:
        click.echo(f"partitions ready through {months_ahead} months ahead")
        return
    for job, name in names.items():
        click.echo(f"{job}: {name}")

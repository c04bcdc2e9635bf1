"""What every intentlake DAG (dags/) shares: owner, retries, tags and one Airflow Asset per lakehouse table.

Kept free of Spark: the scheduler parses the DAG files often, so jobs are imported inside the tasks.
Asset URIs are the tables' locations (INTENTLAKE_LAKEHOUSE), so a DAG that writes a table marks the
same Asset another DAG (a segment sync, say) can be scheduled on.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset

from spark_jobs.settings import TABLES, Settings

OWNER = "data-platform"
DEFAULT_ARGS = {
    "owner": OWNER,
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
}

# What every intentlake DAG passes to DAG(...): no catch-up of missed intervals (each job catches up from its
# own checkpoint or window), and one run at a time (streams share checkpoints; registry writes serialise).
DAG_DEFAULTS = {
    "start_date": datetime(2026, 11, 1),
    "catchup": False,
    "max_active_runs": 1,
    "default_args": DEFAULT_ARGS,
}

_settings = Settings.from_env()
ASSETS = {table: Asset(name=table, uri=_settings.table_path(table).as_uri(), group="intentlake") for table in TABLES}


def assets(*tables: str) -> list[Asset]:
    """The Assets of these tables (a KeyError names a table the contracts do not have)."""
    return [ASSETS[t] for t in tables]


def destination_credentials_from_connection(name: str) -> None:
    """Let an Airflow connection named like the destination supply its token and URL: the password is the
    token, the host the base URL (a full https://... URL). Set into this task process's environment as
    INTENTLAKE_DEST_<NAME>_TOKEN / _URL unless those are already set; nothing is logged or returned."""
    import os

    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import Connection

    try:
        conn = Connection.get(name)
    except AirflowNotFoundException:
        return  # the worker's environment has to carry them
    prefix = f"INTENTLAKE_DEST_{name.upper()}"
    if conn.password:
        os.environ.setdefault(f"{prefix}_TOKEN", conn.password)
    if conn.host and "://" in conn.host:
        os.environ.setdefault(f"{prefix}_URL", conn.host)

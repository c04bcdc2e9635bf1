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

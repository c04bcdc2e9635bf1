"""What every intentlake DAG (dags/) shares: owner, retries, tags and one Airflow Asset per lakehouse table.

Kept free of Spark: the scheduler parses the DAG files often, so jobs are imported inside the tasks.
Asset URIs are the tables' locations (INTENTLAKE_LAKEHOUSE), so a DAG that writes a table marks the
same Asset another DAG (a segment sync, say) can be scheduled on.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Asset

from spark_jobs.settings import TABLES, Settings

OWNER = "data-platform"
DEFAULT_ARGS = {
    "owner": OWNER,
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
}

_settings = Settings.from_env()
ASSETS = {table: Asset(name=table, uri=_settings.table_path(table).as_uri(), group="intentlake") for table in TABLES}


def assets(*tables: str) -> list[Asset]:
    """The Assets of these tables (a KeyError names a table the contracts do not have)."""
    return [ASSETS[t] for t in tables]

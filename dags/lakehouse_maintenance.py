"""lakehouse_maintenance: daily erasure requests, IP expiry, OPTIMIZE (Z-order where lookups pay for it) and VACUUM."""

from __future__ import annotations

from airflow.sdk import DAG, task

from spark_jobs.dag_support import DAG_DEFAULTS, OWNER, assets
from spark_jobs.settings import TABLES

DOC = """
### Table maintenance and erasure requests

- **erase** (first): carries out the pending erasure requests in `ops.erasure_requests` (filed with
  `intentlake erase --user-id ...`): the person is resolved to every identifier of theirs and their rows
  are deleted from every layer, the landing files included; the request keeps a receipt (rows and
  deleting version per table, the identifier only as a keyed hash). Requests erased at least
  `INTENTLAKE_ERASURE_PURGE_HOURS` (default 168) before the run's interval end are then purged: the tables
  they touched are vacuumed with that retention, so time travel no longer shows the person. Before the
  first delete a request records its plan (the identifiers and the rows naming them): a try killed part-way
  is retried from it, and ends with the rows, receipt and purge a clean run would have.
- **expire_ips** (after erase): cuts `context.ip` in `bronze.events` to its network (IPv4 /24, IPv6 /48)
  on rows whose event date is more than `INTENTLAKE_IP_RETENTION_DAYS` (default 30; 0: every row) before
  the run's interval end; text that is no IP address becomes null. The time-zone lookup still finds a cut
  address. A re-run finds nothing to do and commits nothing. The whole IPs leave the older table versions
  with the vacuum below, 7 days later.
- **optimize** (one mapped task per table): compacts the small files streaming micro-batches leave
  behind into a new table version with the same rows. `bronze.events` is Z-ordered by `anonymous_id`,
  `silver.sessions` by `person_id, anonymous_id` and `gold.session_scores` by `person_id`: the columns
  silver's per-device recompute and gold's per-person rescoring filter on. A re-run finds nothing to do.
- **vacuum** (per table, after optimize): deletes files that no version of the last 7 days needs. The
  retention cannot be set lower: restarting streams, long reads and time travel rely on it.
"""

with DAG(
    dag_id="lakehouse_maintenance",
    description="daily erasure requests, IP expiry, OPTIMIZE and VACUUM of every lakehouse table",
    doc_md=DOC,
    schedule="@daily",
    **DAG_DEFAULTS,
    tags=["intentlake", "maintenance"],
) as dag:

    @task(owner=OWNER, outlets=assets(*TABLES))
    def erase(**context) -> dict:
        """Erase pending requests from every layer; purge those erased long enough ago."""
        from spark_jobs import operations as op

        end = context.get("data_interval_end") or context.get("logical_date") or context["dag_run"].run_after
        return op.erasure_summary(op.erase(op.airflow(), end))

    @task(owner=OWNER, outlets=assets("bronze.events"))
    def expire_ips(**context) -> dict:
        """Cut bronze.events' IPs older than INTENTLAKE_IP_RETENTION_DAYS to their network."""
        from spark_jobs import operations as op

        end = context.get("data_interval_end") or context.get("logical_date") or context["dag_run"].run_after
        return op.expire_ips(op.airflow(), end)

    @task(max_active_tis_per_dag=1, owner=OWNER, outlets=assets(*TABLES))
    def optimize(table: str) -> dict:
        """OPTIMIZE one table."""
        from spark_jobs import operations as op

        return op.optimize_table(op.airflow(), table)

    @task(max_active_tis_per_dag=1, owner=OWNER)
    def vacuum(table: str) -> dict:
        """VACUUM one table (7-day retention)."""
        from spark_jobs import operations as op

        return op.vacuum_table(op.airflow(), table)

    optimized = optimize.expand(table=list(TABLES))
    erase() >> expire_ips() >> optimized >> vacuum.expand(table=list(TABLES))

"""lakehouse_maintenance: daily OPTIMIZE (Z-order where lookups pay for it) and VACUUM of every table."""

from __future__ import annotations

from airflow.sdk import DAG, task

from spark_jobs.dag_support import DAG_DEFAULTS, OWNER, assets
from spark_jobs.settings import TABLES

DOC = """
### Table maintenance

- **optimize** (one mapped task per table): compacts the small files streaming micro-batches leave
  behind into a new table version with the same rows. `bronze.events` is Z-ordered by `anonymous_id`,
  `silver.sessions` by `person_id, anonymous_id` and `gold.session_scores` by `person_id`: the columns
  silver's per-device recompute and gold's per-person rescoring filter on. A re-run finds nothing to do.
- **vacuum** (per table, after optimize): deletes files that no version of the last 7 days needs. The
  retention cannot be set lower: restarting streams, long reads and time travel rely on it.

Erasure requests (GDPR) are not processed here yet.
"""

with DAG(
    dag_id="lakehouse_maintenance",
    description="daily OPTIMIZE and VACUUM of every lakehouse table",
    doc_md=DOC,
    schedule="@daily",
    **DAG_DEFAULTS,
    tags=["intentlake", "maintenance"],
) as dag:

    @task(max_active_tis_per_dag=1, owner=OWNER, outlets=assets(*TABLES))
    def optimize(table: str) -> dict:
        """OPTIMIZE one table."""
        from spark_jobs.orchestration import optimize_table

        return optimize_table(table)

    @task(max_active_tis_per_dag=1, owner=OWNER)
    def vacuum(table: str) -> dict:
        """VACUUM one table (7-day retention)."""
        from spark_jobs.orchestration import vacuum_table

        return vacuum_table(table)

    optimized = optimize.expand(table=list(TABLES))
    optimized >> vacuum.expand(table=list(TABLES))

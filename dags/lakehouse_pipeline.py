"""lakehouse_pipeline: bronze -> silver -> gold catch-up runs, each gated by its data-quality suite."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, task

from spark_jobs.dag_support import DAG_DEFAULTS, assets

DOC = """
### Lakehouse pipeline: bronze → silver → gold

Each run catches every layer up with what has arrived since the last run (Spark Structured Streaming
with an `availableNow` trigger: the job reads from its checkpoint, processes everything available,
commits, and stops). Exactly-once holds across retries: a retried task resumes from the checkpoint and
its Delta writes are idempotent.

After each layer, a **quality gate** validates the data files that layer's tables added since they last
passed (`ops.quality_gates`), with the tables' Great Expectations suites (`expectations/`). A failing
gate fails its task with a message naming each failing expectation and the keys of the failing rows
(never their contents), and the layers downstream do not run. The gate is not retried: the data would
not change between tries. The gate's mark does not move, so after a
fix (of the data or the suite) clearing the gate task, or the next run, checks the same rows again.

| task | does | writes |
|---|---|---|
| `bronze` / `gate_bronze` | landing files (or Kafka) → canonical, deduplicated events | `bronze.*` |
| `silver` / `gate_silver` | sessions, micro-moments, identity | `silver.*` |
| `user_features` | per-person features through today (point in time) | `silver.user_features` |
| `gold` / `gate_gold` | scores (champion of `ops.models`), segments (using that day's features), history | `gold.*` |

A gold run that commits `gold.user_segments` triggers **`audience_inputs`** (scheduled on that Asset): send
times, then content picks. The chain: `lakehouse_pipeline` → `gold.user_segments` → `audience_inputs` →
`gold.send_times`, `gold.content_assignments`.

Settings come from the worker's environment (`INTENTLAKE_*`, see the README). Runs never overlap
(`max_active_runs=1`): the streams share their checkpoints.
"""

with DAG(
    dag_id="lakehouse_pipeline",
    description="bronze -> silver -> gold catch-up runs with data-quality gates",
    doc_md=DOC,
    schedule=timedelta(minutes=30),
    **DAG_DEFAULTS,
    tags=["intentlake", "pipeline", "data-quality"],
) as dag:

    @task(outlets=assets("bronze.events", "bronze.quarantine", "ops.pipeline_runs"))
    def bronze() -> dict:
        """Catch bronze up: landing zone (or Kafka) -> bronze.events / bronze.quarantine."""
        from spark_jobs import operations as op

        return op.layer_summary(op.run_layer(op.airflow(), "bronze"))

    @task(outlets=assets("silver.sessions", "silver.micro_moments", "silver.identity_map", "silver.late_events"))
    def silver() -> dict:
        """Catch silver up from bronze.events' new commits."""
        from spark_jobs import operations as op

        return op.layer_summary(op.run_layer(op.airflow(), "silver"))

    @task(outlets=assets("silver.user_features"))
    def user_features() -> dict:
        """Extend silver.user_features through today, so gold's segments read the features of their day."""
        from spark_jobs import operations as op

        return op.features_summary(op.update_features(op.airflow()))

    @task(outlets=assets("gold.session_scores", "gold.user_segments", "gold.user_segments_history"))
    def gold() -> dict:
        """Score changed sessions with the champion model and update segments (audience_inputs schedules on this)."""
        from spark_jobs import operations as op

        return op.layer_summary(op.run_layer(op.airflow(), "gold"))

    @task(outlets=assets("ops.quality_gates"))
    def gate(produced: dict) -> dict:
        """Validate the rows the layer's tables added since they last passed; fails naming the expectation
        and the keys of the failing rows."""
        from airflow.sdk.exceptions import AirflowFailException

        from spark_jobs import operations as op
        from spark_jobs.gates import QualityGateFailed

        try:
            return op.quality_gate(op.airflow(), produced["layer"])
        except QualityGateFailed as failed:  # data, not a transient fault: retrying would not help
            raise AirflowFailException(str(failed)) from failed

    bronze_gate = gate.override(task_id="gate_bronze")(bronze())
    silver_run = silver()
    bronze_gate >> silver_run
    silver_gate = gate.override(task_id="gate_silver")(silver_run)
    features = user_features()
    silver_gate >> features
    gold_run = gold()
    features >> gold_run
    gate.override(task_id="gate_gold")(gold_run)

"""retrain_intent_model: every two weeks, train a challenger and promote it only if it beats the champion."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, task

from spark_jobs.dag_support import DAG_DEFAULTS, assets

DOC = """
### Retrain the intent model

1. **train_challenger** fits the learned model (logistic regression, Spark MLlib) on point-in-time
   features of the closed sessions up to the day before the run's data interval ends
   (`config/models.yaml`: window, held-out days, features), measures it and the current champion on the
   same held-out days, and registers it in `ops.models` as a challenger with both AUCs, precision and
   recall at the score threshold, Brier score and calibration error.
2. **promote_or_keep** promotes it only if its AUC beats the champion's by `promotion.margin`;
   otherwise the champion stays and the task's result says why. The next `lakehouse_pipeline` run
   rescores everyone with a new champion.

Undo a promotion with `intentlake models rollback` (restores the champion retired last). Re-running a
date is safe: the version is named after the data interval, so a retry finds it registered.
"""

with DAG(
    dag_id="retrain_intent_model",
    description="train a challenger intent model and promote it only if it wins on held-out days",
    doc_md=DOC,
    schedule=timedelta(days=14),
    **DAG_DEFAULTS,
    tags=["intentlake", "models"],
) as dag:

    @task(outlets=assets("ops.models"))
    def train_challenger(**context) -> dict:
        """Train on the closed sessions before the run's interval end (a manual run: its logical date, else
        when it was asked to run); register the challenger with its metrics."""
        from spark_jobs import operations as op

        end = context.get("data_interval_end") or context.get("logical_date") or context["dag_run"].run_after
        return op.train_summary(op.train_for_interval(op.airflow(), end))

    @task(outlets=assets("ops.models"))
    def promote_or_keep(trained: dict) -> dict:
        """Promote the challenger if it beats the champion by the margin; otherwise keep the champion."""
        from spark_jobs import operations as op

        return op.promote_or_keep(op.airflow(), trained["version"])

    promote_or_keep(train_challenger())

"""tune_signals: weekly, propose signal weights and score thresholds fitted to recent outcomes, for review."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, task

from spark_jobs.dag_support import DAG_DEFAULTS

DOC = """
### Tune signals (a proposal, never a silent change)

**propose_tuning** reads the closed sessions of the `config/models.yaml` training window
(`training.window_days`) ending the day before the run's data interval ends, with their outcome
(`converted`), and writes a proposal to `<lakehouse>/proposals/tune_signals/<date>/`; `config/` is
never written:

- `scoring.yaml`: the same signals, transforms and caps, with weights from a non-negative logistic
  regression of `converted` on the signals (weights = coefficients / their sum, 3 decimals adding up to 1)
  and a new `model_version` (`<current>-tuned-<date>`);
- `segments.yaml` and `models.yaml`: whole-number score thresholds with the best F1 for a purchase
  (`promotion.score_threshold`; and each segment rule whose condition ANDs one plain
  `intent_score >= N`, e.g. High Intent; other uses of the score are left as they are);
- `proposal.diff`: a unified diff against the current files; `proposal.json`: the window, sessions and
  purchases, the method, and AUC, precision and recall of the current and proposed weights and threshold
  on that window (in-sample figures: the proposal was fitted on the same sessions).

With fewer closed sessions than `training.min_rows`, or fewer than 20 purchases (or non-purchases), the
task writes nothing and its result says why (`status: refused`). Re-running a date writes the same files.

**Review and apply.** Read `proposal.diff` and the figures in `proposal.json`. To apply, from the
repository root: `git apply <lakehouse>/proposals/tune_signals/<date>/proposal.diff` (or copy the three
YAML files over `config/`), run `intentlake validate-config`, and commit through the usual review. The
next `lakehouse_pipeline` run (gold) registers the new `model_version` in `ops.models` and rescores with
it: as champion when the champion is a weighted model, as a challenger when a learned model is champion.
Undo an applied proposal by reverting the commit and `intentlake models rollback`. To discard a proposal,
do nothing (or delete its folder).
"""

with DAG(
    dag_id="tune_signals",
    description="propose signal weights and score thresholds fitted to recent outcomes (reviewed, not applied)",
    doc_md=DOC,
    schedule=timedelta(days=7),
    **DAG_DEFAULTS,
    tags=["intentlake", "models"],
) as dag:

    @task
    def propose_tuning(**context) -> dict:
        """Propose from the closed sessions before the run's interval end (a manual run: its logical date, else
        when it was asked to run); returns where the proposal is and its headline figures."""
        from spark_jobs import operations as op

        end = context.get("data_interval_end") or context.get("logical_date") or context["dag_run"].run_after
        return op.tune_for_interval(op.airflow(), end)

    propose_tuning()

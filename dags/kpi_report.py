"""kpi_report: daily KPIs into gold.kpis_daily and a self-contained HTML report with plots."""

from __future__ import annotations

from airflow.sdk import DAG, task

from spark_jobs.dag_support import DAG_DEFAULTS, assets

DOC = """
### Daily KPI report

For the UTC day before the run's data interval ends (a manual run: the day before its logical date):

1. **compute_kpis** writes the day's KPIs to `gold.kpis_daily` (`config/kpis.yaml`), replacing that day's
   rows, so re-running a day is safe: micro-conversion rate, intent signal accuracy (with precision and
   recall), abandonment at trigger points overall and per micro-moment, segment sizes at the end of the day
   and the moves between segments during it, engagement by local hour.
2. **data_docs** validates every table's current snapshot with its Great Expectations suite and rebuilds
   the Data Docs site under `<lakehouse>/reports/data_docs/` (counts only, never row values).
3. **render_report** writes `<lakehouse>/reports/kpi/kpi_report_<day>.html`: one file with the PNG plots
   embedded (open it from disk or mail it), the seeds' benchmarks drawn as target lines
   (micro-conversion > 15 %, intent accuracy > 85 %, 20 % less abandonment at trigger points than the
   baseline days; NPS >= 50 is shown as not measured until feedback events exist), and a link to the
   Data Docs.

The task results (XCom) carry the day's headline figures and the report's path; no row of any table.
"""

with DAG(
    dag_id="kpi_report",
    description="daily KPIs into gold.kpis_daily and an HTML report with plots and the seeds' targets",
    doc_md=DOC,
    schedule="@daily",
    **DAG_DEFAULTS,
    tags=["intentlake", "reports"],
) as dag:

    @task(outlets=assets("gold.kpis_daily"))
    def compute_kpis(**context) -> dict:
        """KPIs of the day before the run's interval end into gold.kpis_daily (that day's rows replaced)."""
        from spark_jobs import operations as op

        end = context.get("data_interval_end") or context.get("logical_date") or context["dag_run"].run_after
        return op.kpis_for_interval(op.airflow(), end)

    @task
    def data_docs() -> dict:
        """Validate every table with its suite and rebuild the Data Docs site."""
        from spark_jobs import operations as op

        return op.data_docs_summary(op.data_docs(op.airflow()))

    @task
    def render_report(kpis: dict, docs: dict) -> dict:
        """The day's HTML report with embedded PNG plots, linking the Data Docs."""
        from datetime import date

        from spark_jobs import operations as op

        path = op.kpi_report(op.airflow(), date.fromisoformat(kpis["day"]))
        return {"report": str(path), "bytes": path.stat().st_size}

    render_report(compute_kpis(), data_docs())

"""audience_inputs: send times, content picks and profiles, recomputed whenever gold's segments change
(Asset-scheduled)."""

from __future__ import annotations

from airflow.sdk import DAG, task

from spark_jobs.dag_support import ASSETS, DAG_DEFAULTS, assets

DOC = """
### Audience inputs: send times → content picks; profiles

Scheduled on the **`gold.user_segments` Asset** (Airflow data-aware scheduling): every run of
`lakehouse_pipeline` whose `gold` task commits segments queues a run here. No timetable: when gold has
not changed, nothing runs.

| task | does | writes |
|---|---|---|
| `send_times` | each person's best local hour (segment fallback) | `gold.engagement_rhythm`, `gold.send_times` |
| `content_picks` | the winning content rule per person and channel | `gold.content_assignments` |
| `profiles` | each person's login, email, phone and consent per purpose (latest wins) | `silver.profiles` |
| `online_store` | the decision API's store brought up to these tables, segments and ids | Redis |

Send times read the sessions of `config/send_times.yaml`'s window before the run's logical time; content
picks evaluate `config/content_rules.yaml` and carry each person's best send hour.

The chain: `lakehouse_pipeline` (bronze → silver → `silver.user_features` → gold) → `gold.user_segments`
→ this DAG → `gold.send_times`, `gold.content_assignments` and `silver.profiles` (what segment syncs
read: who is in an audience, what to send, whom to match and whether they consented). Every task rewrites
its table from the current state, so a retried or repeated run leaves the same tables.
`online_store` runs last, once the three tables are written, and applies each source table's Change Data Feed
since the version the store last applied (rebuilding from the snapshot when Redis has lost its data); it is
skipped, saying so, when no `INTENTLAKE_REDIS_URL` is set.
Settings come from the worker's environment (`INTENTLAKE_*`).
"""

with DAG(
    dag_id="audience_inputs",
    description="send times, content picks and profiles, whenever gold.user_segments changes",
    doc_md=DOC,
    schedule=[ASSETS["gold.user_segments"]],
    **DAG_DEFAULTS,
    tags=["intentlake", "gold", "activation"],
) as dag:

    @task(outlets=assets("gold.engagement_rhythm", "gold.send_times"))
    def send_times(**context) -> dict:
        """Best local send hour per person from the sessions of the window before the run's logical time."""
        from spark_jobs import operations as op

        now = context.get("logical_date") or context["dag_run"].run_after
        done = op.send_times(op.airflow(), now)
        start, end = done.window
        return {"window": [start.isoformat(), end.isoformat()], "rhythm_rows": done.rhythm_rows,
                "persons": dict(done.send_times)}  # fmt: skip

    @task(outlets=assets("gold.content_assignments"))
    def content_picks(times: dict) -> dict:
        """Each person's content pick per batch channel (carrying the best send hour just computed)."""
        from spark_jobs import operations as op

        done = op.content_picks(op.airflow())
        merge = done.merge
        return {"persons": done.persons, "rules_version": done.rules_version, "inserted": merge.inserted,
                "updated": merge.updated, "deleted": merge.deleted}  # fmt: skip

    @task(outlets=assets("silver.profiles"))
    def profiles() -> dict:
        """Each person's login, email, phone and consent per purpose (counts only in XCom)."""
        from spark_jobs import operations as op

        return op.profiles_summary(op.profiles(op.airflow()))

    @task
    def online_store() -> dict:
        """The decision API's Redis store brought up to gold and silver (counts only in XCom)."""
        from airflow.sdk.exceptions import AirflowSkipException

        from spark_jobs import operations as op

        lakehouse = op.airflow()
        if not lakehouse.settings.redis_url:
            raise AirflowSkipException("no online store configured: INTENTLAKE_REDIS_URL is not set")
        return op.online_summary(op.online_store(lakehouse))

    [content_picks(send_times()), profiles()] >> online_store()

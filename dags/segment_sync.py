"""segment_sync: every destination of config/destinations.yaml gets what changed in its audience, whenever
the audience inputs change (Asset-scheduled), one mapped task per destination."""

from __future__ import annotations

from airflow.sdk import DAG, task

from spark_jobs.dag_support import ASSETS, DAG_DEFAULTS, assets

DOC = """
### Segment syncs: one mapped task per destination

Scheduled on the **`gold.user_segments` Asset** together with `gold.content_assignments` and
`silver.profiles` (a run is queued once all three have been updated since the last one): gold's segments
change, `audience_inputs` rewrites the picks and profiles from them, then the syncs read all three, never a
half-updated set. The chain is `lakehouse_pipeline` → `gold.user_segments` → `audience_inputs` → this
DAG. No timetable: when nothing changed upstream, nothing is sent.

| task | does | writes |
|---|---|---|
| `destinations` | reads and checks `config/destinations.yaml` (no Spark) | XCom: the names |
| `sync` (mapped: one per destination) | diffs the audience with what it acknowledged; sends changes | `ops.sync_*` |

The audience is the destination's segments, narrowed to persons with its consent purpose and a match key
(email or user_id), then its filter. Changes go in the destination's batch size, within its rate limit,
retrying 429 (honouring Retry-After) and 5xx. `ops.sync_*`: `ops.sync_state`, `ops.sync_runs`,
`ops.sync_rejections`.

Each mapped task is its own try: one destination down (its API failing past the retries, a revoked token)
fails only its task, which Airflow retries; the others go on. A retried task first commits what the failed
try had journaled, so it sends nothing the destination acknowledged again (every call is an idempotent
upsert besides). Every run, failed ones too, is a row in `ops.sync_runs` (`intentlake status` shows the
latest per destination); persons a destination refused are in `ops.sync_rejections` with its reason and are
tried again next run.

Credentials: `INTENTLAKE_DEST_<NAME>_TOKEN` and `_URL` in the worker's environment, or an Airflow
connection with the destination's name (password: the token; host: the base URL). XCom carries counts only.
"""

with DAG(
    dag_id="segment_sync",
    description="send segment changes to HubSpot, Braze, Mailchimp, webhooks and files",
    doc_md=DOC,
    schedule=[ASSETS["gold.user_segments"], ASSETS["gold.content_assignments"], ASSETS["silver.profiles"]],
    **DAG_DEFAULTS,
    tags=["intentlake", "activation"],
) as dag:

    @task
    def destinations() -> list[str]:
        """The configured destinations' names, checked against config/segments.yaml (no Spark)."""
        from spark_jobs.activation.destinations import configured
        from spark_jobs.settings import Settings

        return [d.name for d in configured(Settings.from_env())]

    @task(outlets=assets("ops.sync_state", "ops.sync_runs", "ops.sync_rejections"), map_index_template="{{ name }}")
    def sync(name: str) -> dict:
        """Sync one destination: only what changed since what it acknowledged (counts only in XCom)."""
        from spark_jobs import operations as op
        from spark_jobs.dag_support import destination_credentials_from_connection

        destination_credentials_from_connection(name)
        [done] = op.sync(op.airflow(), [name])
        return done.summary()

    sync.expand(name=destinations())

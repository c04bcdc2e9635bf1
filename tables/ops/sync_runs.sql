-- ops.sync_runs: one row per segment sync of one destination: what the audience was, what the diff against
-- ops.sync_state sent (upserts, removals), what the destination acknowledged or refused, the HTTP traffic
-- (requests, retries, 429s) and how the run ended. A dry run computes the diff and sends nothing.
-- added + updated + resent + removals are the calls made; acknowledged + rejected of them came back.
-- @producer: sync
-- @person: none (counts per destination and run)
CREATE TABLE IF NOT EXISTS ops.sync_runs (
  run_id         STRING    NOT NULL COMMENT 'Unique id of the run',
  destination    STRING    NOT NULL COMMENT 'config/destinations.yaml name',
  destination_type STRING  NOT NULL COMMENT 'hubspot, braze, mailchimp, webhook or file',
  mode           STRING    NOT NULL COMMENT 'diff (only changes), full (everyone in the audience again) or dry_run (nothing sent)',
  status         STRING    NOT NULL COMMENT 'succeeded, failed (error says why; what was acknowledged before is kept) or dry_run',
  gold_version   BIGINT    NOT NULL COMMENT 'gold.user_segments version the audience was read at',
  audience       BIGINT    NOT NULL COMMENT 'Persons in the audience (segments, filter, consent, a match key)',
  added          BIGINT    NOT NULL COMMENT 'Persons sent who were not in the destination''s audience',
  updated        BIGINT    NOT NULL COMMENT 'Persons sent again because their fields (or key) changed',
  resent         BIGINT    NOT NULL COMMENT 'Unchanged persons sent again (a full run)',
  removals       BIGINT    NOT NULL COMMENT 'Persons to remove (left the audience, withdrew consent, changed key)',
  unchanged      BIGINT    NOT NULL COMMENT 'Persons in the audience whose fields the destination already holds',
  dead_lettered  BIGINT    NOT NULL COMMENT 'Calls not made: refused INTENTLAKE_SYNC_MAX_TRIES times already (ops.sync_rejections.dead_letter)',
  acknowledged   BIGINT    NOT NULL COMMENT 'Upserts and removals the destination acknowledged',
  rejected       BIGINT    NOT NULL COMMENT 'Ones it refused (ops.sync_rejections has each with the reason)',
  requests       BIGINT    NOT NULL COMMENT 'HTTP requests made (retries included)',
  retries        BIGINT    NOT NULL COMMENT 'Requests retried (429, 5xx, network)',
  throttled      BIGINT    NOT NULL COMMENT 'Responses that were 429 Too Many Requests',
  started_at     TIMESTAMP NOT NULL COMMENT 'Start (UTC)',
  finished_at    TIMESTAMP NOT NULL COMMENT 'End (UTC)',
  error          STRING             COMMENT 'Why a failed run stopped (the exception type and message; never a token)'
)
USING DELTA
COMMENT 'One row per segment sync run of a destination (ops)'
TBLPROPERTIES (
  'intentlake.contract' = 'tables/ops/sync_runs.sql'
)

-- ops.sync_rejections: each person a destination refused in a sync, with the destination's reason (an
-- invalid email, a compliance state, a per-record error of a batch call). Refused persons are not marked
-- synced in ops.sync_state, so the next sync tries them again (and records them again if still refused),
-- up to INTENTLAKE_SYNC_MAX_TRIES runs for the same payload: then the row says dead_letter and the call is
-- not made again until the person's payload changes (or a --full run), and ops.sync_runs counts it.
-- @producer: sync
-- @person: person_id = person_id
CREATE TABLE IF NOT EXISTS ops.sync_rejections (
  run_id        STRING    NOT NULL COMMENT 'ops.sync_runs.run_id',
  destination   STRING    NOT NULL COMMENT 'config/destinations.yaml name',
  person_id     STRING    NOT NULL COMMENT 'The person refused',
  action        STRING    NOT NULL COMMENT 'upsert or remove',
  payload_hash  STRING    NOT NULL COMMENT 'ops.sync_state.payload_hash of the call refused (the same call, tried again, has the same hash)',
  tries         INT       NOT NULL COMMENT 'How many runs have had this very call refused, this one included',
  dead_letter   BOOLEAN   NOT NULL COMMENT 'True once tries reaches INTENTLAKE_SYNC_MAX_TRIES: not tried again until the payload changes',
  reason        STRING    NOT NULL COMMENT 'The destination''s own reason, as it gave it (at most 300 characters)',
  rejected_at   TIMESTAMP NOT NULL COMMENT 'When (UTC)'
)
USING DELTA
COMMENT 'Persons a destination refused during a sync, with its reason (ops)'
TBLPROPERTIES (
  'intentlake.contract' = 'tables/ops/sync_rejections.sql'
)

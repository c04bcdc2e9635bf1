-- ops.sync_rejections: each person a destination refused in a sync, with the destination's reason (an
-- invalid email, a compliance state, a per-record error of a batch call). Refused persons are not marked
-- synced in ops.sync_state, so the next sync tries them again (and records them again if still refused).
-- @producer: sync
-- @person: person_id = person_id
CREATE TABLE IF NOT EXISTS ops.sync_rejections (
  run_id        STRING    NOT NULL COMMENT 'ops.sync_runs.run_id',
  destination   STRING    NOT NULL COMMENT 'config/destinations.yaml name',
  person_id     STRING    NOT NULL COMMENT 'The person refused',
  action        STRING    NOT NULL COMMENT 'upsert or remove',
  reason        STRING    NOT NULL COMMENT 'The destination''s own reason, as it gave it (at most 300 characters)',
  rejected_at   TIMESTAMP NOT NULL COMMENT 'When (UTC)'
)
USING DELTA
COMMENT 'Persons a destination refused during a sync, with its reason (ops)'
TBLPROPERTIES (
  'intentlake.contract' = 'tables/ops/sync_rejections.sql'
)

-- ops.sync_state: what each destination (config/destinations.yaml) holds of each person, as it acknowledged
-- it: the key it knows them by, the record id it gave, a hash of the fields last sent and whether they are
-- in its audience. A sync diffs the audience against this table and sends only what changed; its rows are
-- committed every few thousand acknowledgements, so a sync killed mid-run resumes where it stopped (what
-- was sent but not yet committed is sent again: every call is an idempotent upsert). Erasure reads it to
-- reach the copies destinations hold, calls each destination's delete, then deletes the rows.
-- @producer: sync
-- @person: person_id = person_id
-- @person-exempt: match_value (the email or user_id the destination matches on; held on the person's row, which erasure deletes by person_id)
CREATE TABLE IF NOT EXISTS ops.sync_state (
  destination   STRING    NOT NULL COMMENT 'config/destinations.yaml name',
  person_id     STRING    NOT NULL COMMENT 'Stable person key (gold.user_segments.person_id)',
  match_value   STRING    NOT NULL COMMENT 'What the destination matches the person on (their email or user_id, per match_key)',
  record_id     STRING             COMMENT 'The destination''s own id for the record (HubSpot contact id, Mailchimp subscriber hash), when it gives one',
  payload_hash  STRING    NOT NULL COMMENT 'sha256 of the key and mapped fields last acknowledged',
  in_audience   BOOLEAN   NOT NULL COMMENT 'In the destination''s audience as of the last acknowledged call (false: removed or deleted)',
  segment       STRING             COMMENT 'The segment the person had when last sent',
  gold_version  BIGINT    NOT NULL COMMENT 'gold.user_segments version the acknowledged call was computed from',
  synced_at     TIMESTAMP NOT NULL COMMENT 'When the destination acknowledged it (UTC)'
)
USING DELTA
COMMENT 'Per destination and person: what the destination acknowledged holding (ops)'
TBLPROPERTIES (
  'intentlake.contract' = 'tables/ops/sync_state.sql'
)

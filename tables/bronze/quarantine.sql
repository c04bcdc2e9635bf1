-- bronze.quarantine: every input line that could not be accepted, with the raw payload and the reason,
-- so it can be inspected, fixed and replayed. Nothing rejected is ever dropped silently.
-- @producer: bronze, replay_quarantine
-- @person: raw = payload
CREATE TABLE IF NOT EXISTS bronze.quarantine (
  raw             STRING    NOT NULL COMMENT 'The input line exactly as received (may hold personal data; access-restricted)',
  reason          STRING    NOT NULL COMMENT 'Enumerated reason: malformed_json, not_an_object, unknown_source, schema_violation, bad_timestamp, future_timestamp, stale_timestamp, oversize_record, invalid_encoding, too_late_for_watermark, quality_check_failed',
  detail          STRING    NOT NULL COMMENT 'Human-readable detail naming the field and the problem',
  event_id        STRING             COMMENT 'Event id when one could be read, for replay and dedup',
  source_file     STRING             COMMENT 'Landing file (or topic/partition/offset) the line came from',
  quarantined_at  TIMESTAMP NOT NULL COMMENT 'When the bronze batch that rejected it started',
  quarantine_date DATE      NOT NULL COMMENT 'Partition: UTC date of quarantined_at',
  ingest_batch    STRING    NOT NULL COMMENT 'Lineage: <query id>/<micro-batch id> that rejected the line',
  replayed_at     TIMESTAMP          COMMENT 'When `intentlake replay-quarantine` last re-ingested this row; null if never',
  replay_outcome  STRING             COMMENT 'What that replay did: accepted, duplicate (bronze already held it), or rejected: <reason>'
)
USING DELTA
PARTITIONED BY (quarantine_date)
COMMENT 'Rejected input lines with reasons (bronze)'
TBLPROPERTIES (
  'delta.logRetentionDuration' = 'interval 30 days',
  'intentlake.contract' = 'tables/bronze/quarantine.sql'
)

-- ops.pipeline_runs: one row per micro-batch of every job. For bronze the counts prove that nothing
-- is lost: input_rows = accepted_rows + quarantined_rows + duplicate_rows.
-- @producer: bronze, silver, gold, replay_quarantine
-- @person: none (counts, offsets and failing keys per batch)
CREATE TABLE IF NOT EXISTS ops.pipeline_runs (
  job              STRING    NOT NULL COMMENT 'bronze, bronze-kafka, silver, gold or replay-quarantine',
  query_id         STRING    NOT NULL COMMENT 'Streaming query id (stable across restarts on one checkpoint)',
  batch_id         BIGINT    NOT NULL COMMENT 'Micro-batch id within the query',
  started_at       TIMESTAMP NOT NULL COMMENT 'When the batch started (UTC)',
  duration_ms      BIGINT    NOT NULL COMMENT 'Wall time of the batch',
  input_rows       BIGINT    NOT NULL COMMENT 'Records read by the batch (a Segment batch envelope counts once per message)',
  accepted_rows    BIGINT    NOT NULL COMMENT 'Rows the batch wrote to the job''s main table: bronze the events appended; silver and gold the sessions and scores it computed for its scope, upserted (a batch replayed after a kill counts them too, though an earlier attempt wrote them; what each MERGE changed is in details)',
  quarantined_rows BIGINT    NOT NULL COMMENT 'Rows sent to bronze.quarantine',
  duplicate_rows   BIGINT    NOT NULL COMMENT 'Rows dropped as duplicates of an accepted event',
  quarantine_reasons MAP<STRING, BIGINT> NOT NULL COMMENT 'Quarantined rows per reason',
  details          MAP<STRING, STRING> NOT NULL COMMENT 'Job-specific figures (rows updated, deleted, min/max event time ...)',
  run_date         DATE      NOT NULL COMMENT 'Partition: UTC date of started_at',
  late_rows        BIGINT             COMMENT 'Rows older than the watermark (quarantined as too_late_for_watermark); bronze only',
  watermark        TIMESTAMP          COMMENT 'Event time before which the batch refused events (bronze: newest event time seen minus the dedup window)',
  max_event_time   TIMESTAMP          COMMENT 'Newest accepted event time after this batch (the next batch''s watermark starts from it)',
  source_offsets   MAP<STRING, STRING> COMMENT 'What the batch read: Kafka topic/partition -> first..last offset, or landing file -> lines',
  quality_status   STRING             COMMENT 'Data quality gate: passed, failed (rows quarantined) or halted (stream stopped); null when not validated',
  quality_failures MAP<STRING, ARRAY<STRING>> COMMENT 'Failing expectation -> keys (event_id) of the failing rows, at most 100 per expectation; never row contents'
)
USING DELTA
PARTITIONED BY (run_date)
COMMENT 'Per-batch counts of every job (ops)'
TBLPROPERTIES (
  'intentlake.contract' = 'tables/ops/pipeline_runs.sql'
)

-- silver.late_events: bronze events that reached silver after the event-time watermark had passed them
-- (occurred_at < newest event time seen before their batch - INTENTLAKE_ALLOWED_LATENESS). Sessions they
-- belong to may already be closed and final, so they are recorded here instead of changing them: nothing
-- is silently lost. One row per late event; re-running a batch adds nothing.
-- @producer: silver
-- @gated: silver
-- @person: anonymous_id = anonymous_id
CREATE TABLE IF NOT EXISTS silver.late_events (
  event_id         STRING    NOT NULL COMMENT 'bronze.events event_id',
  anonymous_id     STRING    NOT NULL COMMENT 'Browser / device id',
  session_id       STRING             COMMENT 'Client session id, when the event has one',
  event_type       STRING    NOT NULL COMMENT 'Canonical event type',
  occurred_at      TIMESTAMP NOT NULL COMMENT 'Event time (UTC)',
  watermark        TIMESTAMP NOT NULL COMMENT 'The silver watermark it was behind',
  lateness_seconds DOUBLE    NOT NULL COMMENT 'watermark - occurred_at in seconds',
  ingest_batch     STRING    NOT NULL COMMENT 'Bronze lineage of the event (<query id>/<micro-batch id>)',
  silver_batch     STRING    NOT NULL COMMENT 'The silver <query id>/<micro-batch id> that found it late',
  event_date       DATE      NOT NULL COMMENT 'Partition: UTC date of occurred_at'
)
USING DELTA
PARTITIONED BY (event_date)
COMMENT 'Events behind the silver watermark, kept out of closed sessions (silver)'
TBLPROPERTIES (
  'delta.enableChangeDataFeed' = 'true',
  'intentlake.contract' = 'tables/silver/late_events.sql'
)

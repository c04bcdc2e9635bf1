-- silver.micro_moments: in-session triggers, one row per detection with its evidence. Detected by the
-- silver job in every session it recomputes, with the thresholds in config/micro_moments.yaml, so a late
-- event can create, change or remove a detection; a re-run gives the same moment_ids.
-- @producer: silver
-- @gated: silver
-- @person: person_id = person_id
-- @person: anonymous_id = anonymous_id
CREATE TABLE IF NOT EXISTS silver.micro_moments (
  moment_id     STRING    NOT NULL COMMENT 'Stable id: hash of session_id, moment_type and the first evidence event',
  moment_type   STRING    NOT NULL COMMENT 'rapid_scroll_burst, search_refinement, repeat_product_view, location_shift, cart_abandonment_risk or ad_fatigue',
  session_id    STRING    NOT NULL COMMENT 'The silver.sessions session the moment happened in',
  person_id     STRING    NOT NULL COMMENT 'Person key, as in silver.sessions',
  anonymous_id  STRING    NOT NULL COMMENT 'Browser / device id',
  detected_at   TIMESTAMP NOT NULL COMMENT 'Event time of the event that completed the pattern (UTC)',
  event_ids     ARRAY<STRING> NOT NULL COMMENT 'The bronze events that make up the evidence, in event-time order',
  evidence      MAP<STRING, STRING> NOT NULL COMMENT 'The figures behind the detection: counts, seconds, depths, queries, distance, products',
  moment_date   DATE      NOT NULL COMMENT 'Partition: UTC date of detected_at'
)
USING DELTA
PARTITIONED BY (moment_date)
COMMENT 'Micro-moments detected in sessions, with evidence (silver)'
TBLPROPERTIES (
  'delta.enableChangeDataFeed' = 'true',
  'intentlake.contract' = 'tables/silver/micro_moments.sql'
)

-- gold.send_times: the best local hour to reach each person (the hour their sessions most often start
-- in), falling back to their segment's when they have too few sessions (config/send_times.yaml), with
-- how sure that is. Rewritten whole by `intentlake send-times`; email/CRM syncs read it.
-- @producer: send_times
-- @person: person_id = person_id
CREATE TABLE IF NOT EXISTS gold.send_times (
  person_id        STRING    NOT NULL COMMENT 'Stable person key (gold.user_segments.person_id)',
  best_local_hour  INT       NOT NULL COMMENT 'Hour 0-23 in the person''s own zone (ties: the earlier hour)',
  timezone         STRING             COMMENT 'The zone of the person''s latest session (null when unknown)',
  source           STRING    NOT NULL COMMENT 'person, segment (too few own sessions) or everyone (segment has none either)',
  confidence       DOUBLE    NOT NULL COMMENT 'Share of the source''s sessions that start in that hour; halved for a fallback (segment, everyone)',
  sessions         INT       NOT NULL COMMENT 'The person''s own sessions in the window',
  segment          STRING             COMMENT 'Current segment (gold.user_segments) when the person has one',
  window_end       TIMESTAMP NOT NULL COMMENT 'When this was computed (UTC); the window is config/send_times.yaml window_days before it'
)
USING DELTA
COMMENT 'Best local send hour per person, with fallback and confidence (gold)'
TBLPROPERTIES (
  'delta.enableChangeDataFeed' = 'true',
  'intentlake.contract' = 'tables/gold/send_times.sql'
)

-- gold.engagement_rhythm: when people engage, by local start hour and weekday, per person and per
-- segment (their current gold.user_segments segment), over config/send_times.yaml's window. Only the
-- hours and weekdays with sessions have a row. Rewritten whole by `intentlake send-times`.
-- @producer: send_times
-- @person: scope_key = person_id when scope = 'person'
CREATE TABLE IF NOT EXISTS gold.engagement_rhythm (
  scope          STRING    NOT NULL COMMENT 'person or segment',
  scope_key      STRING    NOT NULL COMMENT 'person_id, or the segment name',
  local_weekday  INT       NOT NULL COMMENT 'ISO weekday of the session start in the user''s zone (1 = Monday)',
  local_hour     INT       NOT NULL COMMENT 'Hour 0-23 of the session start in the user''s zone',
  sessions       INT       NOT NULL COMMENT 'Closed sessions that started in this hour and weekday',
  conversions    INT       NOT NULL COMMENT 'Of those, sessions with a purchase',
  share          DOUBLE    NOT NULL COMMENT 'sessions / all of the scope key''s sessions in the window',
  window_start   TIMESTAMP NOT NULL COMMENT 'Sessions that ended from here (UTC) ...',
  window_end     TIMESTAMP NOT NULL COMMENT '... to before here (UTC): when the table was computed'
)
USING DELTA
COMMENT 'Engagement by local hour and weekday, per person and per segment (gold)'
TBLPROPERTIES (
  'intentlake.contract' = 'tables/gold/engagement_rhythm.sql'
)

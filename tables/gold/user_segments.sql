-- gold.user_segments: the current segment of each person, from their most recent session.
-- Change Data Feed is on, so syncs and analysts can read exactly who entered or left a segment.
-- @producer: gold
-- @gated: gold
-- @person: person_id = person_id
CREATE TABLE IF NOT EXISTS gold.user_segments (
  person_id      STRING    NOT NULL COMMENT 'Stable person key (see silver.sessions.person_id)',
  segment        STRING    NOT NULL COMMENT 'Current segment name (config/segments.yaml)',
  intent_score   DOUBLE    NOT NULL COMMENT 'Score of the session that decided the segment',
  session_id     STRING    NOT NULL COMMENT 'The most recent session, which decided the segment',
  last_seen_at   TIMESTAMP NOT NULL COMMENT 'session_end of that session (UTC)',
  sessions       INT       NOT NULL COMMENT 'Sessions this person has in silver',
  model_version  STRING    NOT NULL COMMENT 'Scoring model behind intent_score'
)
USING DELTA
COMMENT 'Current micro-segment per person (gold)'
TBLPROPERTIES (
  'delta.enableChangeDataFeed' = 'true',
  'intentlake.contract' = 'tables/gold/user_segments.sql'
)

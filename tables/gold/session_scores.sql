-- gold.session_scores: a 0-100 intent score per session, the model that produced it and each
-- signal's contribution (contributions add up to the score), plus the segment the session falls in.
-- @producer: gold
-- @gated: gold
-- @person: person_id = person_id
CREATE TABLE IF NOT EXISTS gold.session_scores (
  session_id     STRING    NOT NULL COMMENT 'silver.sessions.session_id',
  person_id      STRING    NOT NULL COMMENT 'silver.sessions.person_id',
  session_start  TIMESTAMP NOT NULL COMMENT 'Session start (UTC)',
  session_end    TIMESTAMP NOT NULL COMMENT 'Session end (UTC)',
  is_closed      BOOLEAN   NOT NULL COMMENT 'Whether the session was closed when scored',
  intent_score   DOUBLE    NOT NULL COMMENT 'Intent score 0-100 (sum of contributions)',
  contributions  MAP<STRING, DOUBLE> NOT NULL COMMENT 'Points each signal added to the score',
  model_version  STRING    NOT NULL COMMENT 'Scoring model that produced the score (config/scoring.yaml model_version)',
  segment        STRING    NOT NULL COMMENT 'First matching rule of config/segments.yaml',
  session_date   DATE      NOT NULL COMMENT 'Partition: UTC date of session_start'
)
USING DELTA
PARTITIONED BY (session_date)
COMMENT 'Explainable intent score per session (gold)'
TBLPROPERTIES (
  'delta.enableChangeDataFeed' = 'true',
  'intentlake.contract' = 'tables/gold/session_scores.sql'
)

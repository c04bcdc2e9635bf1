-- gold.user_segments_history: every spell a person spent in a segment, one row per spell, kept from
-- gold.user_segments' Change Data Feed. A spell opens at the commit that put the person in the segment and
-- closes at the commit that moved them out (or removed them, e.g. an identity merge retired the person).
--   who was in X at T:  WHERE segment = X AND valid_from <= T AND (valid_to IS NULL OR valid_to > T)
--   when did P enter X: WHERE person_id = P AND segment = X  (valid_from of each spell)
-- Times are gold.user_segments commit times, so "as of T" here equals that table's TIMESTAMP AS OF T.
-- @producer: gold
-- @person: person_id = person_id
CREATE TABLE IF NOT EXISTS gold.user_segments_history (
  person_id       STRING    NOT NULL COMMENT 'Stable person key (gold.user_segments.person_id)',
  segment         STRING    NOT NULL COMMENT 'Segment of this spell (config/segments.yaml)',
  valid_from      TIMESTAMP NOT NULL COMMENT 'Commit time of the gold.user_segments version that put the person in the segment (UTC)',
  valid_to        TIMESTAMP          COMMENT 'Commit time of the version that moved them out; null while the spell lasts',
  source_version  BIGINT    NOT NULL COMMENT 'gold.user_segments version that opened the spell',
  closed_version  BIGINT             COMMENT 'gold.user_segments version that closed it; null while open',
  intent_score    DOUBLE    NOT NULL COMMENT 'Score of the session that put the person in the segment',
  session_id      STRING    NOT NULL COMMENT 'That session',
  model_version   STRING    NOT NULL COMMENT 'Scoring model behind that score'
)
USING DELTA
COMMENT 'Segment membership over time, one row per spell (gold)'
TBLPROPERTIES (
  'delta.enableChangeDataFeed' = 'true',
  'intentlake.contract' = 'tables/gold/user_segments_history.sql'
)

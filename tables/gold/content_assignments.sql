-- gold.content_assignments: what each person should get on each batch channel (email, CRM): the
-- highest-priority rule of config/content_rules.yaml whose CEL trigger holds for the person's current
-- segment and context, with its adaptations. Rewritten by `intentlake content-picks`; a person no rule
-- matches has no row for that channel.
-- @producer: content_picks
-- @person: person_id = person_id
CREATE TABLE IF NOT EXISTS gold.content_assignments (
  person_id        STRING    NOT NULL COMMENT 'Stable person key (gold.user_segments.person_id)',
  channel          STRING    NOT NULL COMMENT 'Batch channel (config/content_rules.yaml channels)',
  rule             STRING    NOT NULL COMMENT 'The content rule that won (highest priority among those matching)',
  priority         INT       NOT NULL COMMENT 'Its priority',
  tone             STRING    NOT NULL COMMENT 'Adaptation: tone of voice',
  format           STRING    NOT NULL COMMENT 'Adaptation: content format',
  cta              STRING    NOT NULL COMMENT 'Adaptation: call to action',
  segment          STRING    NOT NULL COMMENT 'The person''s segment when evaluated',
  intent_score     DOUBLE    NOT NULL COMMENT 'Intent score of the session that decided the segment',
  session_id       STRING    NOT NULL COMMENT 'That session (its context fed the trigger)',
  best_local_hour  INT                COMMENT 'Best local send hour (gold.send_times) when known',
  rules_version    STRING    NOT NULL COMMENT 'sha256 (12 hex digits) of the content_rules.yaml that decided',
  evaluated_at     TIMESTAMP NOT NULL COMMENT 'When the pick last changed (UTC)'
)
USING DELTA
COMMENT 'Content pick per person and batch channel (gold)'
TBLPROPERTIES (
  'delta.enableChangeDataFeed' = 'true',
  'intentlake.contract' = 'tables/gold/content_assignments.sql'
)

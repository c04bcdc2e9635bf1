-- gold.kpis_daily: the day's KPIs (config/kpis.yaml), one row per KPI and dimension, written by
-- `intentlake kpis --date D` and the kpi_report DAG. A day is rewritten whole (replaceWhere kpi_date), so a
-- re-run of the same day replaces its rows instead of adding to them. Aggregates only: no person appears here.
--   micro_conversion_rate   dimension all        triggered sessions that micro-converted / triggered sessions
--   intent_accuracy         dimension all        closed sessions whose score >= threshold agreed with the purchase
--   intent_precision/recall dimension all        the same confusion matrix
--   trigger_abandonment     dimension all or a micro-moment type: triggered sessions without a purchase
--   segment_size            dimension a segment  persons in the segment at the end of the day (UTC)
--   segment_flow            dimension 'from>to'  persons who moved between segments during the day ('(new)' enters)
--   engagement_by_hour      dimension local hour sessions that started in that local hour; value = mean engaged seconds
-- @producer: kpis
-- @person: none (daily aggregates; no row names a person)
CREATE TABLE IF NOT EXISTS gold.kpis_daily (
  kpi_date        DATE      NOT NULL COMMENT 'The UTC day the KPI describes',
  kpi             STRING    NOT NULL COMMENT 'KPI name (see the table comment and config/kpis.yaml)',
  dimension       STRING    NOT NULL COMMENT 'all for the day''s figure, else a segment, a from>to flow, a micro-moment type or a local hour',
  value           DOUBLE             COMMENT 'The figure (a rate 0-1, a count or seconds); null when its denominator is 0',
  numerator       BIGINT    NOT NULL COMMENT 'Count behind the value (rates: the numerator; counts: the count)',
  denominator     BIGINT    NOT NULL COMMENT 'Count the rate is taken over (counts: the same as numerator)',
  target          DOUBLE             COMMENT 'The benchmark from config/kpis.yaml (seeds), when the KPI has one',
  target_met      BOOLEAN            COMMENT 'value meets target (direction from config/kpis.yaml); null without value or target',
  as_of           TIMESTAMP NOT NULL COMMENT 'End of the interval the report ran for (UTC); never the wall clock',
  config_version  STRING    NOT NULL COMMENT 'sha256 (12 hex digits) of config/kpis.yaml that defined the KPIs'
)
USING DELTA
PARTITIONED BY (kpi_date)
COMMENT 'Daily KPIs with the seeds'' benchmarks as targets (gold)'
TBLPROPERTIES (
  'intentlake.contract' = 'tables/gold/kpis_daily.sql'
)

-- silver.user_features: point-in-time behavioural features, one row per (person_id, as_of_date).
-- A row holds the features as known at the START of as_of_date, as_of = as_of_date 00:00 UTC. Only
-- sessions that had ENDED before that instant count (session_end < as_of): a session still running at
-- midnight counts from the next day on, and later sessions never change an earlier row.
-- Point-in-time use: a training label observed at time t joins the row with the greatest as_of <= t
-- (as_of_date <= the UTC date of t), so its features never saw a session ending after t.
-- Windows (lengths in config/user_features.yaml, which must match the column names): the N-day window
-- of an as_of is the half-open [as_of - N days, as_of) on session_start - a session starting exactly
-- N days before as_of is in, one ending exactly at as_of is out. Every *_28d column uses the same
-- sessions: started in the 28-day window and ended before as_of.
-- Rows: a person has a row for an as_of_date when at least one of their sessions ended in
-- [as_of - 28 days, as_of). Such a row can show 0 sessions_28d (the session started before the window).
-- Written by spark_jobs/silver/user_features.py (update_user_features), merged per as_of_date partition.
-- @producer: features
-- @person: person_id = person_id
CREATE TABLE IF NOT EXISTS silver.user_features (
  person_id               STRING     NOT NULL COMMENT 'Person key, as in silver.sessions (silver.identity_map)',
  sessions_7d             INT        NOT NULL COMMENT 'Sessions started in [as_of - 7 days, as_of) and ended before as_of',
  sessions_28d            INT        NOT NULL COMMENT 'Sessions started in [as_of - 28 days, as_of) and ended before as_of',
  product_views_28d       INT        NOT NULL COMMENT 'product_view events in those 28-day sessions',
  cart_adds_28d           INT        NOT NULL COMMENT 'cart_add events in those 28-day sessions',
  purchases_28d           INT        NOT NULL COMMENT 'Converted sessions (a purchase happened) among those 28-day sessions',
  cart_add_rate_28d       DOUBLE              COMMENT 'cart_adds_28d / product_views_28d; null when there were no product views',
  conversion_rate_28d     DOUBLE              COMMENT 'purchases_28d / sessions_28d; null when sessions_28d is 0',
  avg_dwell_seconds_28d   DOUBLE              COMMENT 'Mean of the sessions total page dwell (seconds) over the 28-day sessions; null when none',
  days_since_last_session DOUBLE     NOT NULL COMMENT 'Days (fractional) from the latest session_end before as_of to as_of; always under 28',
  engagement_by_hour      ARRAY<INT> NOT NULL COMMENT '24 counts of the 28-day sessions by local start hour, index 0 = 00:00-00:59 in the user zone; sessions without a local hour are not counted',
  engagement_by_weekday   ARRAY<INT> NOT NULL COMMENT '7 counts of the 28-day sessions by local start weekday, index 0 = Monday; sessions without a local weekday are not counted',
  first_seen              TIMESTAMP  NOT NULL COMMENT 'Earliest session_start (UTC) of the sessions that ended before as_of, over all history',
  feature_version         STRING     NOT NULL COMMENT 'feature_version of config/user_features.yaml the row was computed with',
  as_of_date              DATE       NOT NULL COMMENT 'Partition: the features are as of this date 00:00 UTC (sessions ended before then)'
)
USING DELTA
PARTITIONED BY (as_of_date)
COMMENT 'Point-in-time per-person features for training and scoring (silver)'
TBLPROPERTIES (
  'delta.enableChangeDataFeed' = 'true',
  'intentlake.contract' = 'tables/silver/user_features.sql'
)

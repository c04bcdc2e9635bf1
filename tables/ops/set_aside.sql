-- ops.set_aside: input a streaming job met and could not process, set aside so that the stream keeps going
-- (as bronze quarantines what breaks the contract). When a silver or gold micro-batch fails on its data
-- (an error Spark raises while evaluating rows: a failed cast, a constraint, a Python UDF), the job splits
-- the batch by device (silver) or person (gold), processes every part that goes through, and records here
-- the keys whose part alone still fails, with the error's class and never the values that caused it. A
-- fault that fails every part (code, configuration, the cluster) is not data: it still stops the job.
-- Bronze keeps the events: after a fix, a new checkpoint or the device's next events bring them back.
-- @producer: silver, gold
-- @person: key_value = anonymous_id when key_column = 'anonymous_id'
-- @person: key_value = person_id when key_column = 'person_id'
CREATE TABLE IF NOT EXISTS ops.set_aside (
  job           STRING        NOT NULL COMMENT 'The job that set it aside: silver or gold',
  batch         STRING        NOT NULL COMMENT 'Its <query id>/<micro-batch id>',
  key_column    STRING        NOT NULL COMMENT 'What the batch was split by: anonymous_id (silver) or person_id (gold)',
  key_value     STRING        NOT NULL COMMENT 'The device or person whose part of the batch failed on its own',
  input_rows    BIGINT        NOT NULL COMMENT 'Rows of the batch for that key (bronze events; silver session changes)',
  event_ids     ARRAY<STRING>          COMMENT 'silver: the bronze event_ids set aside (gold: null)',
  error_class   STRING        NOT NULL COMMENT 'Spark error condition (CAST_INVALID_INPUT, DELTA_NOT_NULL_CONSTRAINT_VIOLATED, ...) or the exception type',
  error_type    STRING        NOT NULL COMMENT 'Exception type (the message is not kept: it can quote the values)',
  set_aside_at  TIMESTAMP     NOT NULL COMMENT 'When (UTC)'
)
USING DELTA
COMMENT 'Input a silver or gold batch could not process, set aside with the error class (ops)'
TBLPROPERTIES (
  'intentlake.contract' = 'tables/ops/set_aside.sql'
)

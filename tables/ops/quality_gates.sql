-- ops.quality_gates: how far each gated table has passed its data-quality suite. The pipeline's gate
-- tasks validate the files a table's commits added after passed_version, and move it forward only when
-- every expectation passes, so rows that failed are checked again by the next run, never skipped.
-- @producer: quality_gate
-- @person: none (a version mark per gated table)
CREATE TABLE IF NOT EXISTS ops.quality_gates (
  table_name      STRING    NOT NULL COMMENT 'Gated table (expectations/<layer>_<table>.json)',
  passed_version  BIGINT    NOT NULL COMMENT 'Delta version of the table up to which every added file passed',
  checked_rows    BIGINT    NOT NULL COMMENT 'Rows the last passing check validated',
  passed_at       TIMESTAMP NOT NULL COMMENT 'When that check ran (UTC)'
)
USING DELTA
COMMENT 'Data-quality gate progress per table (ops)'
TBLPROPERTIES (
  'intentlake.contract' = 'tables/ops/quality_gates.sql'
)

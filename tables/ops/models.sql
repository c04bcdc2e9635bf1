-- ops.models: every intent model version, weighted (config/scoring.yaml) or learned (`intentlake train`),
-- with what it reads, its parameters, the window it was trained and judged on, its metrics and its status.
-- Exactly one row is the champion (gold scores with it); `intentlake models promote` and `rollback` move
-- the status, and the table's Delta history keeps every change.
-- @producer: train, promote, rollback
-- @person: none (model versions, parameters and metrics)
CREATE TABLE IF NOT EXISTS ops.models (
  model_version   STRING    NOT NULL COMMENT 'Unique name: scoring.yaml model_version, or learned-lr-<UTC time> from intentlake train',
  kind            STRING    NOT NULL COMMENT 'weighted (config weights) or learned (MLlib logistic regression)',
  status          STRING    NOT NULL COMMENT 'champion (scores gold), challenger (registered, not scoring) or retired',
  features        ARRAY<STRING> NOT NULL COMMENT 'Inputs the model reads (column or column=value)',
  parameters      STRING    NOT NULL COMMENT 'JSON: the weighted signals, or the coefficients, intercept and training means',
  training_start  DATE               COMMENT 'First session day trained on (learned models)',
  training_end    DATE               COMMENT 'Last session day trained on',
  holdout_start   DATE               COMMENT 'First held-out day the metrics were measured on (never trained on)',
  holdout_end     DATE               COMMENT 'Last held-out day',
  metrics         MAP<STRING, DOUBLE> NOT NULL COMMENT 'On the held-out days: auc, precision/recall at the score threshold, brier, calibration_error, rows; baseline_auc of the model compared with',
  compared_with   STRING             COMMENT 'The champion it was compared with on the held-out days',
  registered_at   TIMESTAMP NOT NULL COMMENT 'When the version was registered (UTC)',
  promoted_at     TIMESTAMP          COMMENT 'When it last became champion',
  retired_at      TIMESTAMP          COMMENT 'When it last stopped being champion',
  note            STRING             COMMENT 'Why the status last changed (promotion, rollback, config change)'
)
USING DELTA
COMMENT 'Model registry: versions, metrics and champion / challenger / retired status (ops)'
TBLPROPERTIES (
  'intentlake.contract' = 'tables/ops/models.sql'
)

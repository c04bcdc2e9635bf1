-- ops.erasure_requests: one row per erasure (right to be forgotten) request and its receipt. A request is
-- filed with `intentlake erase` (status pending) and carried out by the lakehouse_maintenance DAG or
-- `intentlake erase --process`: the person's rows are deleted from every layer (status erased), then the
-- files of older table versions that still hold them are vacuumed (status purged), so time travel no longer
-- shows them. The identifier itself is kept only while the request is pending; the receipt keeps its hash.
-- @producer: erase
-- @person: none (the requests themselves; the subject is blanked once erased)
-- @person-exempt: subject, plan (blanked by the erasure that carries the request out)
CREATE TABLE IF NOT EXISTS ops.erasure_requests (
  request_id      STRING    NOT NULL COMMENT 'Request id (uuid) handed to the requester',
  subject_type    STRING    NOT NULL COMMENT 'user_id, anonymous_id or person_id: what the requester identified the person by',
  subject         STRING             COMMENT 'The identifier while pending; null once erased (only subject_hash remains)',
  subject_hash    STRING    NOT NULL COMMENT 'sha256 of subject_type:subject, to answer "was X erased" without keeping X',
  requested_at    TIMESTAMP NOT NULL COMMENT 'When the request was filed (UTC)',
  status          STRING    NOT NULL COMMENT 'pending, erased (current versions) or purged (older versions vacuumed too)',
  erased_at       TIMESTAMP          COMMENT 'When the rows were deleted from every layer',
  purged_at       TIMESTAMP          COMMENT 'When older table versions holding them were vacuumed',
  identifiers     INT                COMMENT 'How many identifiers (person ids, anonymous ids, user ids) the person resolved to',
  rows_deleted    MAP<STRING, BIGINT> COMMENT 'Rows deleted per table (landing: lines removed from landing files)',
  table_versions  MAP<STRING, BIGINT> COMMENT 'The Delta version of each table''s deleting commit',
  receipt         STRING             COMMENT 'The receipt as JSON: request, hash, per-table counts and versions, times',
  suppressed      ARRAY<STRING>      COMMENT 'Keyed hashes (HMAC-SHA256 under INTENTLAKE_HASH_KEY) of every identifier the person resolved to: a batch that reads rows naming them, committed upstream before suppressed_before, drops them (a stream behind its source must not bring the person back)',
  suppressed_before TIMESTAMP        COMMENT 'Wall-clock time of the deleting commits: rows received (or committed) before it are the erased ones',
  plan            STRING             COMMENT 'While an erasure is under way: the identifiers it resolved and the rows and landing lines naming them, as JSON, recorded before the first delete so a retried erasure deletes, counts and purges the same; null once erased'
)
USING DELTA
COMMENT 'Erasure requests and their receipts (ops)'
TBLPROPERTIES (
  'intentlake.contract' = 'tables/ops/erasure_requests.sql'
)

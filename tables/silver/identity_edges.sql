-- silver.identity_edges: the evidence identity resolution works from, one row per device (anonymous_id)
-- and identifier it was seen with. Identifiers come from bronze.events: the login (user_id), an email hash
-- (properties.email_hash, or sha256 of the lower-cased trimmed properties.email - the raw email is never
-- stored), properties.device_fingerprint, and the keyed hash (HMAC-SHA256 under INTENTLAKE_HASH_KEY) of
-- context.ip | device.user_agent when both are sent.
-- The silver job recomputes the rows of every device in a micro-batch from all of that device's bronze
-- events, so a replayed or re-run batch leaves the table as it was.
-- @producer: silver
-- @person: anonymous_id = anonymous_id
-- @person: identifier = identifier
CREATE TABLE IF NOT EXISTS silver.identity_edges (
  anonymous_id     STRING    NOT NULL COMMENT 'Browser / device id the identifier was seen on',
  identifier_type  STRING    NOT NULL COMMENT 'anonymous_id (the device itself), user_id, email_hash, fingerprint or ip_ua',
  identifier       STRING    NOT NULL COMMENT 'The login id, the keyed email hash, the device fingerprint or the keyed hash of ip|user agent',
  first_seen       TIMESTAMP NOT NULL COMMENT 'occurred_at of the first event of the device carrying it (UTC)',
  last_seen        TIMESTAMP NOT NULL COMMENT 'occurred_at of the last event of the device carrying it (UTC)',
  events           BIGINT    NOT NULL COMMENT 'Events of the device carrying it'
)
USING DELTA
COMMENT 'Identity evidence: which device was seen with which login, email hash, fingerprint or IP + user agent (silver)'
TBLPROPERTIES (
  'delta.enableChangeDataFeed' = 'true',
  'intentlake.contract' = 'tables/silver/identity_edges.sql'
)

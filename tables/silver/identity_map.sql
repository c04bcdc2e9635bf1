-- silver.identity_map: every known device (anonymous_id), login (user_id) and email hash, with the person
-- it belongs to. Rebuilt from silver.identity_edges by identity resolution (spark_jobs/silver/identity.py,
-- thresholds in config/identity.yaml); only rows that changed are rewritten, so the Change Data Feed shows
-- real changes. person_id is 'p-' + 24 hex of HMAC-SHA256 (under INTENTLAKE_HASH_KEY) of the person's anchor
-- identifier (the earliest-seen
-- user_id, else the earliest-seen email hash, else the earliest-seen device), so a re-run from scratch on
-- the same input gives the same ids; when two persons merge, the one whose anchor wins keeps its id.
-- linked_by lets a batch's resolution follow a fingerprint or IP + user agent too common to link anyone only
-- to the devices it attached before it became so, not to every device behind a NAT.
-- @producer: silver, undo_merge
-- @gated: silver
-- @person: person_id = person_id
-- @person: identifier = identifier
CREATE TABLE IF NOT EXISTS silver.identity_map (
  identifier_type  STRING    NOT NULL COMMENT 'anonymous_id, user_id or email_hash',
  identifier       STRING    NOT NULL COMMENT 'The device id, login id or keyed email hash',
  person_id        STRING    NOT NULL COMMENT 'Stable person key: p- + 24 hex of HMAC-SHA256(<anchor type>:<anchor identifier>) under the hash key',
  method           STRING    NOT NULL COMMENT 'How it joined its person (weakest link on the way to the anchor): login, email_hash, fingerprint, ip_ua, shared_device (a shared device, a person of its own) or self (the anchor, or alone)',
  confidence       DOUBLE    NOT NULL COMMENT 'Confidence of that weakest link, 0-1 (config/identity.yaml); 1 for self',
  first_seen       TIMESTAMP NOT NULL COMMENT 'First event time the identifier was seen (UTC)',
  last_seen        TIMESTAMP NOT NULL COMMENT 'Last event time the identifier was seen (UTC)',
  linked_by        STRING             COMMENT 'The fingerprint or keyed IP + user agent hash of the link that attached this device to its person (its step towards the anchor); empty when a login, an email hash or nothing did; null on rows resolved before this column existed'
)
USING DELTA
COMMENT 'Identity resolution: devices, logins and email hashes to a stable person_id, with method and confidence (silver)'
TBLPROPERTIES (
  'delta.enableChangeDataFeed' = 'true',
  'intentlake.contract' = 'tables/silver/identity_map.sql'
)

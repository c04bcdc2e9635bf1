-- bronze.events: every accepted behaviour event, normalised onto the canonical event (v1, v2 or v3; see
-- tables/events/) and deduplicated by (session_id, event_id), or event_id alone when the source sends no
-- session id (INTENTLAKE_DEDUP_KEYS). One row per distinct event. Appended by `intentlake run bronze`.
-- @producer: bronze
-- @gated: bronze
-- @person: anonymous_id = anonymous_id
-- @person: user_id = user_id
CREATE TABLE IF NOT EXISTS bronze.events (
  event_id        STRING    NOT NULL COMMENT 'Client or source event id; unique per session_id in this table',
  event_type      STRING    NOT NULL COMMENT 'Canonical type: page_view, product_view, scroll, click, search, cart_add, wishlist_add, purchase, identify, location (v2), custom, cart_remove, form, consent (v3), exposure (v4: a decision the decision API made)',
  occurred_at     TIMESTAMP NOT NULL COMMENT 'Event time in UTC, as stamped by the client',
  received_at     TIMESTAMP NOT NULL COMMENT 'When the collector or SDK batch received it (UTC)',
  user_id         STRING             COMMENT 'Login id when the user is identified, else null',
  anonymous_id    STRING    NOT NULL COMMENT 'Browser / device id set by the SDK',
  session_id      STRING             COMMENT 'Client-provided session id, when the source sends one',
  device          STRUCT<type: STRING, os: STRING, user_agent: STRING> COMMENT 'Device class (desktop, mobile, tablet, bot in v3), OS and raw user agent',
  context         STRUCT<ip: STRING, locale: STRING, timezone: STRING, geo: STRUCT<lat: DOUBLE, lon: DOUBLE, country: STRING, city: STRING>> COMMENT 'Network, locale, IANA time zone and geo position',
  page            STRUCT<url: STRING, path: STRING, referrer: STRING> COMMENT 'Page or screen the event happened on',
  properties      MAP<STRING, STRING> COMMENT 'Event-specific properties (product_id, query, scroll_depth, x, y, button_id ...), values as text',
  consent         ARRAY<STRING>      COMMENT 'Consent scopes granted with this event (analytics, marketing, personalization)',
  source          STRUCT<kind: STRING, sdk: STRING, version: STRING> COMMENT 'Input format (segment, web_sdk, mobile_sdk, server_log, snowplow, iot_beacon, api), SDK name and version',
  schema_version  INT       NOT NULL COMMENT 'Canonical event schema version the row conforms to',
  event_date      DATE      NOT NULL COMMENT 'Partition: UTC date of occurred_at',
  ingested_at     TIMESTAMP NOT NULL COMMENT 'When the bronze batch that wrote this row started',
  source_file     STRING             COMMENT 'Landing file (or topic/partition/offset) the line came from',
  ingest_batch    STRING    NOT NULL COMMENT 'Lineage: <query id>/<micro-batch id> that wrote the row (replay/<id> for a quarantine replay)',
  campaign        STRUCT<source: STRING, medium: STRING, name: STRING, term: STRING, content: STRING> COMMENT 'v2: marketing attribution (utm_* parameters or the source campaign context); null when unknown',
  event_name      STRING             COMMENT 'v3: the source''s own name for the event (Segment track name, SDK kind, Snowplow action or schema vendor/name); what a custom event is'
)
USING DELTA
PARTITIONED BY (event_date)
COMMENT 'Canonical, deduplicated behaviour events (bronze)'
TBLPROPERTIES (
  'delta.appendOnly' = 'false',
  'delta.logRetentionDuration' = 'interval 30 days',
  'intentlake.contract' = 'tables/bronze/events.sql'
)

-- silver.sessions: event-time sessions per browser/device. A client session id is honoured when
-- present; otherwise a gap of at least the idle timeout (INTENTLAKE_SESSION_TIMEOUT, default 5 minutes)
-- between consecutive events starts a new session. Open sessions are rewritten as events arrive.
CREATE TABLE IF NOT EXISTS silver.sessions (
  session_id       STRING    NOT NULL COMMENT 'Client session id when sent, else a stable hash of anonymous_id and session_start',
  person_id        STRING    NOT NULL COMMENT 'Stable person key: user:<user_id> once the device logged in, else anon:<anonymous_id>',
  anonymous_id     STRING    NOT NULL COMMENT 'Browser / device id the session belongs to',
  user_id          STRING             COMMENT 'Last login id seen in the session, if any',
  session_start    TIMESTAMP NOT NULL COMMENT 'occurred_at of the first event (UTC)',
  session_end      TIMESTAMP NOT NULL COMMENT 'occurred_at of the last event (UTC)',
  is_closed        BOOLEAN   NOT NULL COMMENT 'True once bronze holds an event for this device at least the idle timeout after session_end (event time)',
  sessionized_by   STRING    NOT NULL COMMENT 'client_session_id or idle_timeout',
  event_count      INT       NOT NULL COMMENT 'Events in the session',
  page_depth       INT       NOT NULL COMMENT 'Distinct pages (paths) viewed',
  dwell_seconds    DOUBLE    NOT NULL COMMENT 'Average seconds on a page: time from each page or product view to the next event',
  max_scroll_depth DOUBLE    NOT NULL COMMENT 'Deepest scroll reached, percent 0-100',
  product_views    INT       NOT NULL COMMENT 'product_view events',
  cart_adds        INT       NOT NULL COMMENT 'cart_add events',
  wishlist_adds    INT       NOT NULL COMMENT 'wishlist_add events',
  searches         INT       NOT NULL COMMENT 'search events',
  duration_seconds DOUBLE    NOT NULL COMMENT 'session_end - session_start in seconds',
  device_type      STRING             COMMENT 'desktop, mobile or tablet (from the first event)',
  timezone         STRING             COMMENT 'IANA time zone of the first event',
  converted        BOOLEAN   NOT NULL COMMENT 'A purchase happened in the session',
  session_date     DATE      NOT NULL COMMENT 'Partition: UTC date of session_start'
)
USING DELTA
PARTITIONED BY (session_date)
COMMENT 'Event-time sessions with per-session features (silver)'
TBLPROPERTIES (
  'delta.enableChangeDataFeed' = 'true',
  'intentlake.contract' = 'tables/silver/sessions.sql'
)

-- silver.sessions: event-time sessions per browser/device, with context and features. A client session id
-- is honoured when present (per device, split at the maximum length too); otherwise a gap of at least the idle timeout (INTENTLAKE_SESSION_TIMEOUT,
-- default 5 minutes) between consecutive events starts a new session, and a session reaching
-- INTENTLAKE_MAX_SESSION_LENGTH is split. Open sessions are rewritten every micro-batch as events arrive;
-- closed ones are final (a later event for them goes to silver.late_events).
-- Sources: every count comes from bronze.events event_type; dwell/engaged time from occurred_at gaps;
-- scroll figures from properties.scroll_depth; products from properties.product_id; context from the
-- event's timezone / geo / ip and device.user_agent (config/context.yaml, config/ip_timezones.csv).
-- @producer: silver
-- @gated: silver
-- @person: person_id = person_id
-- @person: anonymous_id = anonymous_id
-- @person: user_id = user_id
CREATE TABLE IF NOT EXISTS silver.sessions (
  session_id           STRING    NOT NULL COMMENT 'Unique and stable: c-<hash of anonymous_id and client_session_id (and the start of a later piece split at the maximum length)>, else s-<hash of anonymous_id and session_start>',
  person_id            STRING    NOT NULL COMMENT 'Stable person key from silver.identity_map (login, else device), as of the last recompute',
  anonymous_id         STRING    NOT NULL COMMENT 'Browser / device id the session belongs to',
  user_id              STRING             COMMENT 'Last login id seen in the session, if any',
  session_start        TIMESTAMP NOT NULL COMMENT 'occurred_at of the first event (UTC)',
  session_end          TIMESTAMP NOT NULL COMMENT 'occurred_at of the last event (UTC)',
  is_closed            BOOLEAN   NOT NULL COMMENT 'True once the event-time watermark passed session_end + idle timeout: the session is final',
  sessionized_by       STRING    NOT NULL COMMENT 'client_session_id, idle_timeout (a gap started it) or max_length (split from a marathon, a client session''s too)',
  event_count          INT       NOT NULL COMMENT 'Events in the session',
  page_depth           INT       NOT NULL COMMENT 'Distinct pages (paths) of page_view / product_view events',
  page_views           INT       NOT NULL COMMENT 'page_view + product_view events',
  dwell_seconds        DOUBLE    NOT NULL COMMENT 'Average seconds on a page: from each page or product view to the next event',
  dwell_total_seconds  DOUBLE    NOT NULL COMMENT 'Sum of those per-page dwells (the last page has no next event and counts 0)',
  engaged_seconds      DOUBLE    NOT NULL COMMENT 'Sum of gaps between consecutive events, each capped at engaged_gap_cap_seconds (config/context.yaml)',
  max_scroll_depth     DOUBLE    NOT NULL COMMENT 'Deepest scroll reached, percent 0-100 (scroll events)',
  scroll_velocity      DOUBLE    NOT NULL COMMENT 'Average depth gained per second between consecutive deeper scrolls (percentage points/s)',
  scrolls              INT       NOT NULL COMMENT 'scroll events',
  clicks               INT       NOT NULL COMMENT 'click events',
  click_density        DOUBLE    NOT NULL COMMENT 'clicks per page view (0 without page views)',
  product_views        INT       NOT NULL COMMENT 'product_view events',
  distinct_products    INT       NOT NULL COMMENT 'Distinct properties.product_id among product views',
  repeat_product_views INT       NOT NULL COMMENT 'product_views - distinct_products: views of a product already seen in the session',
  cart_adds            INT       NOT NULL COMMENT 'cart_add events',
  wishlist_adds        INT       NOT NULL COMMENT 'wishlist_add events',
  searches             INT       NOT NULL COMMENT 'search events',
  search_refinements   INT       NOT NULL COMMENT 'Searches with another query than the previous search, within the refinement window (config/micro_moments.yaml)',
  checkout_started     BOOLEAN   NOT NULL COMMENT 'A page under /checkout was seen',
  converted            BOOLEAN   NOT NULL COMMENT 'A purchase happened in the session',
  drop_off_page        STRING             COMMENT 'page.path of the last event: where the visitor left (or converted)',
  traffic_source       STRING    NOT NULL COMMENT 'campaign source (utm_source / source campaign), else the external referrer host, else direct',
  traffic_medium       STRING    NOT NULL COMMENT 'campaign medium, else campaign, referral or direct',
  campaign             STRING             COMMENT 'Campaign name of the first event that has one',
  source_kind          STRING             COMMENT 'Input format of the first event (web_sdk, segment, mobile_sdk, ...)',
  timezone             STRING             COMMENT 'IANA time zone of the user: the event''s own, else from lat/lon, else from the IP',
  timezone_source      STRING             COMMENT 'event, geo or ip: where timezone came from (null when unknown)',
  local_start          TIMESTAMP_NTZ      COMMENT 'Wall-clock time in timezone at session_start (DST-correct)',
  local_hour           INT                COMMENT 'Hour 0-23 of local_start',
  local_weekday        INT                COMMENT 'ISO weekday of local_start: 1 = Monday ... 7 = Sunday',
  daypart              STRING             COMMENT 'night, morning, afternoon or evening of local_hour (config/context.yaml)',
  device_type          STRING             COMMENT 'desktop, mobile, tablet or bot: bot when the source (or its enrichment) or the user agent says so, else the SDK''s own, else parsed from the user agent; bot sessions are not scored',
  os                   STRING             COMMENT 'Operating system and version parsed from the user agent (else the SDK''s)',
  browser              STRING             COMMENT 'Browser and major version parsed from the user agent',
  session_phase        STRING    NOT NULL COMMENT 'entry, browsing, deep or checkout: how far the session has gone (config/context.yaml)',
  duration_seconds     DOUBLE    NOT NULL COMMENT 'session_end - session_start in seconds',
  updated_at           TIMESTAMP NOT NULL COMMENT 'When the silver batch that last changed this row ran (freshness)',
  session_date         DATE      NOT NULL COMMENT 'Partition: UTC date of session_start',
  custom_events        MAP<STRING, INT>   COMMENT 'Custom events (not mapped onto a canonical type by config/event_vocabulary.yaml) by their source name: how many of each; custom_features there turns named ones into rule and model inputs custom_<key>',
  client_session_id    STRING             COMMENT 'The session id the client sent (Snowplow domain_sessionid, web SDK sid ...), when it sent one: session_id is then a hash of it and the device, unique across devices'
)
USING DELTA
PARTITIONED BY (session_date)
COMMENT 'Event-time sessions with context and per-session features (silver)'
TBLPROPERTIES (
  'delta.enableChangeDataFeed' = 'true',
  'intentlake.contract' = 'tables/silver/sessions.sql'
)

-- silver.profiles: what a marketing platform needs to know a person by, one row per person: the login
-- (user_id), the email and phone from identify traits (latest non-blank wins), and consent per purpose
-- (analytics, marketing, personalization: the latest event that states consent decides, with when and
-- from which source). Built from bronze.events and silver.identity_map (spark_jobs/silver/profiles.py),
-- rewritten only where a row changed. The email and phone are personal data kept for the destinations that
-- match on them (config/destinations.yaml); they never reach a quality report, and erasure deletes the row.
-- A person no event ever gave consent for has every purpose false: nothing is sent without a grant.
-- @producer: profiles
-- @person: person_id = person_id
-- @person: user_id = user_id
-- @person-exempt: email, phone (held on the person's row, which erasure deletes by person_id and user_id)
CREATE TABLE IF NOT EXISTS silver.profiles (
  person_id                STRING    NOT NULL COMMENT 'Stable person key (silver.identity_map.person_id)',
  user_id                  STRING             COMMENT 'The login id last seen for the person (null: never logged in)',
  email                    STRING             COMMENT 'Lower-cased trimmed email from the latest identify traits or properties that had one',
  phone                    STRING             COMMENT 'Phone from the latest identify traits or properties that had one, as sent',
  consent_analytics        BOOLEAN   NOT NULL COMMENT 'Granted in the latest event that stated consent',
  consent_marketing        BOOLEAN   NOT NULL COMMENT 'Granted in the latest event that stated consent',
  consent_personalization  BOOLEAN   NOT NULL COMMENT 'Granted in the latest event that stated consent',
  consent_updated_at       TIMESTAMP          COMMENT 'occurred_at of that event (null: no event ever stated consent)',
  consent_source           STRING             COMMENT 'Its source kind (segment, snowplow, web_sdk, ...)',
  updated_at               TIMESTAMP NOT NULL COMMENT 'occurred_at of the newest event the row was built from (UTC)'
)
USING DELTA
COMMENT 'Person traits and consent for destinations: login, email, phone, consent per purpose (silver)'
TBLPROPERTIES (
  'delta.enableChangeDataFeed' = 'true',
  'intentlake.contract' = 'tables/silver/profiles.sql'
)

-- silver.identity_merges: every time a person id was retired because its identifiers joined another person,
-- with the evidence, and whether the merge still holds. A merge is undone by evidence when a later resolution
-- no longer joins the two sides (the device logged in as someone else, became a shared device, ...), or by an
-- operator (`undo_merge`): a manual undo is a do-not-link rule that resolution honours from then on.
-- @producer: silver, undo_merge
-- @gated: silver
-- @person: kept_person_id = person_id
-- @person: retired_person_id = person_id
CREATE TABLE IF NOT EXISTS silver.identity_merges (
  merge_id             STRING    NOT NULL COMMENT 'Stable id: m- + 24 hex of sha256(kept_person_id|retired_person_id)',
  kept_person_id       STRING    NOT NULL COMMENT 'The person the identifiers joined (its anchor won)',
  retired_person_id    STRING    NOT NULL COMMENT 'The person id that no longer exists after the merge',
  method               STRING    NOT NULL COMMENT 'Weakest link between the retired identifiers and the kept anchor: login, email_hash, fingerprint or ip_ua',
  confidence           DOUBLE    NOT NULL COMMENT 'Confidence of that link, 0-1',
  evidence             MAP<STRING, STRING> NOT NULL COMMENT 'kept_anchor, retired_anchor, path (identifier -[method confidence]- identifier ...), link key of the weakest link',
  kept_identifiers     ARRAY<STRING> NOT NULL COMMENT 'type:identifier of the kept person at merge time (one side of a do-not-link rule)',
  retired_identifiers  ARRAY<STRING> NOT NULL COMMENT 'type:identifier that moved from the retired person (the other side)',
  merged_at            TIMESTAMP NOT NULL COMMENT 'Event time the joining evidence was complete (UTC)',
  status               STRING    NOT NULL COMMENT 'active or undone',
  undone_by            STRING             COMMENT 'evidence (a later resolution no longer joins the sides) or manual (undo_merge: a do-not-link rule)',
  undone_reason        STRING             COMMENT 'Why it was undone: what the evidence now says, or the operator reason',
  undone_evidence      MAP<STRING, STRING>  COMMENT 'The evidence that contradicted the merge (identifier, now_person_id, now_path, refused links, notes)',
  undone_at            TIMESTAMP          COMMENT 'Event time of the contradicting evidence, or when the operator undid it (UTC)'
)
USING DELTA
COMMENT 'Identity merges and their undos, with evidence (silver)'
TBLPROPERTIES (
  'delta.enableChangeDataFeed' = 'true',
  'intentlake.contract' = 'tables/silver/identity_merges.sql'
)

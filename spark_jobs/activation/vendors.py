"""Each destination type's API contract, as its vendor documents it: what a batch upsert, a removal from
the audience and an erasure look like on the wire, and how per-record errors come back.

An adapter takes at most the destination's batch size of members per call (the caller chunks) and
answers with a BatchOutcome: the keys the destination acknowledged (with its record id when it gives
one) and the keys it refused, each with the destination's own reason. A whole-request failure (retries
exhausted, auth) raises from the transport (spark_jobs/activation/transport.py) and acknowledges nothing.

- HubSpot CRM v3: POST /crm/v3/objects/contacts/batch/upsert by email (100 inputs per call; a partial
  failure is 207 Multi-Status with errors[] naming the inputs), list membership through
  PUT /crm/v3/lists/{listId}/memberships/add-and-remove (record ids), erasure through
  POST /crm/v3/objects/contacts/gdpr-delete. Private-app bearer token.
- Braze: POST /users/track, attributes objects by external_id or email (75 per request; errors[] carry
  the index of the object), POST /users/delete by external_ids or email_addresses (50 per request).
- Mailchimp Marketing: POST /lists/{list_id} batch member upsert (500 members; errors[] per email), the
  tag by its static segment id for the whole batch (POST /lists/{list_id}/segments/{tag_id}: 500 emails)
  or by name per member (POST /lists/{list_id}/members/{subscriber_hash}/tags; hash = MD5 of the
  lower-cased email), and
  POST .../members/{hash}/actions/delete-permanent. HTTP Basic with the API key as password.
- Webhook: JSON batches signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature:
  HMAC-SHA256 over "<id>.<timestamp>.<body>"); the id is the batch's content hash, so a retried batch
  carries the same id and a receiver can drop the duplicate.
- File: the whole audience as CSV or Parquet plus a manifest, written to a temporary name and renamed.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import standardwebhooks

from spark_jobs.activation.destinations import Credentials, Destination
from spark_jobs.activation.transport import DestinationError, RetryPolicy, Transport


@dataclass(frozen=True)
class Member:
    """One person as a destination sees them: the match key's value, the mapped fields, and the record
    id the destination gave on an earlier sync (HubSpot contact id, Mailchimp subscriber hash)."""

    key: str
    fields: dict[str, object] = field(default_factory=dict)
    record_id: str | None = None


@dataclass
class BatchOutcome:
    acknowledged: dict[str, str | None] = field(default_factory=dict)  # key -> destination record id
    rejected: dict[str, str] = field(default_factory=dict)  # key -> the destination's reason

    def merge(self, other: BatchOutcome) -> BatchOutcome:
        self.acknowledged.update(other.acknowledged)
        self.rejected.update(other.rejected)
        return self


class DestinationConfigError(DestinationError):
    """The destination is not set up to be called (a missing token or URL): names what to set."""


def _need(credentials: Credentials, destination: Destination, token: bool = True) -> tuple[str, str]:
    if token and not credentials.token:
        raise DestinationConfigError(
            f"{destination.name}: set {destination.env_prefix}_TOKEN (or an Airflow connection)"
        )
    if not credentials.url:
        raise DestinationConfigError(f"{destination.name}: set {destination.env_prefix}_URL (no default for it)")
    return credentials.token or "", credentials.url


def _reason(body: object, fallback: str) -> str:
    if isinstance(body, dict):
        for key in ("message", "detail", "error", "title"):
            if isinstance(body.get(key), str):
                return body[key][:300]
    return fallback


def _delete_each(keys: list[str], call) -> BatchOutcome:
    """One erasure call per key: 2xx acknowledges, 404 too (nothing there to erase), anything else is the
    key's rejection with the vendor's reason."""
    outcome = BatchOutcome()
    for key in keys:
        response = call(key)
        if response.status_code in (200, 204, 404):
            outcome.acknowledged[key] = None
        else:
            outcome.rejected[key] = _reason(response.json() if response.content else {}, f"HTTP {response.status_code}")
    return outcome


class HubSpot:
    def __init__(self, destination: Destination, credentials: Credentials, policy: RetryPolicy, **transport) -> None:
        token, url = _need(credentials, destination)
        self.destination = destination
        self.http = Transport(destination.name, url, {"Authorization": f"Bearer {token}"},
                              destination.requests_per_second, policy, destination.burst, **transport)  # fmt: skip

    def _errors(self, body: dict, keys: Sequence[str]) -> dict[str, str]:
        rejected: dict[str, str] = {}
        for error in body.get("errors") or []:
            ids = ((error.get("context") or {}).get("ids")) or []
            for key in ids:
                if key in keys:
                    rejected[key] = f"{error.get('category', 'ERROR')}: {error.get('message', '')}"[:300]
        return rejected

    def upsert(self, members: list[Member]) -> BatchOutcome:
        keys = [m.key for m in members]
        inputs = [{"id": m.key, "idProperty": "email", "properties": {k: _text(v) for k, v in m.fields.items()}}
                  for m in members]  # fmt: skip
        response = self.http.request("POST", "/crm/v3/objects/contacts/batch/upsert", json={"inputs": inputs})
        body = response.json() if response.content else {}
        if response.status_code not in (200, 201, 207):
            return BatchOutcome(rejected={k: _reason(body, f"HTTP {response.status_code}") for k in keys})
        outcome = BatchOutcome(rejected=self._errors(body, keys))
        by_email = {
            str((r.get("properties") or {}).get("email", "")).lower(): r.get("id") for r in body.get("results") or []
        }
        for key in keys:
            if key not in outcome.rejected:
                outcome.acknowledged[key] = by_email.get(key.lower())
        return outcome.merge(self._membership(outcome.acknowledged, add=True))

    def _membership(self, ids: dict[str, str | None], add: bool) -> BatchOutcome:
        list_id = self.destination.options.get("list_id")
        records = {k: v for k, v in ids.items() if v}
        if not list_id or not records:
            return BatchOutcome()
        field_name = "recordIdsToAdd" if add else "recordIdsToRemove"
        response = self.http.request(
            "PUT", f"/crm/v3/lists/{list_id}/memberships/add-and-remove", json={field_name: list(records.values())}
        )
        if response.status_code != 200:
            body = response.json() if response.content else {}
            return BatchOutcome(
                rejected={k: _reason(body, f"list membership: HTTP {response.status_code}") for k in records}
            )
        return BatchOutcome()

    def remove(self, members: list[Member]) -> BatchOutcome:
        outcome = BatchOutcome(acknowledged={m.key: m.record_id for m in members})
        failed = self._membership({m.key: m.record_id for m in members}, add=False)
        for key in failed.rejected:
            outcome.acknowledged.pop(key, None)
        return outcome.merge(failed)

    def delete(self, keys: list[str]) -> BatchOutcome:
        return _delete_each(  # one GDPR delete per contact, as the API takes them
            keys,
            lambda key: self.http.request(
                "POST", "/crm/v3/objects/contacts/gdpr-delete", json={"objectId": key, "idProperty": "email"}
            ),
        )


class Braze:
    def __init__(self, destination: Destination, credentials: Credentials, policy: RetryPolicy, **transport) -> None:
        token, url = _need(credentials, destination)
        self.destination = destination
        self.http = Transport(destination.name, url, {"Authorization": f"Bearer {token}"},
                              destination.requests_per_second, policy, destination.burst, **transport)  # fmt: skip
        self.identifier = "external_id" if destination.match_key == "user_id" else "email"

    def _track(self, members: list[Member], in_audience: bool) -> BatchOutcome:
        attribute = self.destination.options.get("audience_attribute")
        objects = []
        for m in members:
            obj: dict[str, object] = {self.identifier: m.key, **(m.fields if in_audience else {})}
            if attribute:
                obj[str(attribute)] = in_audience
            objects.append(obj)
        response = self.http.request("POST", "/users/track", json={"attributes": objects})
        body = response.json() if response.content else {}
        keys = [m.key for m in members]
        if response.status_code not in (200, 201):
            return BatchOutcome(rejected={k: _reason(body, f"HTTP {response.status_code}") for k in keys})
        rejected = {}
        for error in body.get("errors") or []:
            index = error.get("index")
            if (
                isinstance(index, int)
                and 0 <= index < len(keys)
                and error.get("input_array", "attributes") == "attributes"
            ):
                rejected[keys[index]] = str(error.get("type", "error"))[:300]
        return BatchOutcome({k: None for k in keys if k not in rejected}, rejected)

    def upsert(self, members: list[Member]) -> BatchOutcome:
        return self._track(members, True)

    def remove(self, members: list[Member]) -> BatchOutcome:
        if not self.destination.options.get("audience_attribute"):
            return BatchOutcome({m.key: m.record_id for m in members})  # nothing in Braze marks membership
        return self._track(members, False)

    def delete(self, keys: list[str]) -> BatchOutcome:
        outcome = BatchOutcome()
        field_name = "external_ids" if self.identifier == "external_id" else "email_addresses"
        for start in range(0, len(keys), 50):  # /users/delete takes 50 identifiers per request
            chunk = keys[start : start + 50]
            response = self.http.request("POST", "/users/delete", json={field_name: chunk})
            if response.status_code in (200, 201):
                outcome.acknowledged.update({k: None for k in chunk})
            else:
                reason = _reason(response.json() if response.content else {}, f"HTTP {response.status_code}")
                outcome.rejected.update({k: reason for k in chunk})
        return outcome


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: MD5 of the lower-cased email (an identifier they define, not a protection)."""
    return hashlib.md5(email.strip().lower().encode(), usedforsecurity=False).hexdigest()


class Mailchimp:
    def __init__(self, destination: Destination, credentials: Credentials, policy: RetryPolicy, **transport) -> None:
        token, url = _need(credentials, destination)
        self.destination = destination
        basic = base64.b64encode(f"intentlake:{token}".encode()).decode()
        self.http = Transport(destination.name, url, {"Authorization": f"Basic {basic}"},
                              destination.requests_per_second, policy, destination.burst, **transport)  # fmt: skip
        self.list_id = str(destination.options["list_id"])
        self.tag = destination.options.get("tag")
        self.tag_id = destination.options.get("tag_id")  # the tag's static segment id: one call per batch

    def _segment(self, members: list[Member], add: bool, outcome: BatchOutcome) -> BatchOutcome:
        """Tag (or untag) the whole batch in one call: a tag is a static segment, and
        POST /lists/{list_id}/segments/{segment_id} adds or removes up to 500 emails; errors[] name them."""
        emails = [m.key for m in members if m.key in outcome.acknowledged]
        if not emails:
            return outcome
        field_name = "members_to_add" if add else "members_to_remove"
        response = self.http.request("POST", f"/lists/{self.list_id}/segments/{self.tag_id}", json={field_name: emails})
        body = response.json() if response.content else {}
        if response.status_code != 200:
            for email in emails:
                outcome.acknowledged.pop(email, None)
                outcome.rejected[email] = _reason(body, f"segment: HTTP {response.status_code}")
            return outcome
        lowered = {e.lower(): e for e in emails}
        for error in body.get("errors") or []:
            for address in error.get("email_addresses") or []:
                email = lowered.get(str(address).lower())
                if email is not None:
                    outcome.acknowledged.pop(email, None)
                    outcome.rejected[email] = f"segment: {error.get('error', 'error')}"[:300]
        return outcome

    def _tag(self, members: list[Member], status: str, outcome: BatchOutcome) -> BatchOutcome:
        if self.tag_id:
            return self._segment(members, status == "active", outcome)
        for m in members:
            if m.key not in outcome.acknowledged:
                continue
            path = f"/lists/{self.list_id}/members/{subscriber_hash(m.key)}/tags"
            response = self.http.request("POST", path, json={"tags": [{"name": self.tag, "status": status}]})
            if response.status_code not in (200, 204):
                outcome.acknowledged.pop(m.key, None)
                outcome.rejected[m.key] = _reason(
                    response.json() if response.content else {}, f"tags: HTTP {response.status_code}"
                )
        return outcome

    def upsert(self, members: list[Member]) -> BatchOutcome:
        status = str(self.destination.options.get("status_if_new", "transactional"))
        rows = [
            {
                "email_address": m.key,
                "status_if_new": status,
                "merge_fields": {k: _text(v) for k, v in m.fields.items()},
            }
            for m in members
        ]
        payload = {"members": rows, "update_existing": True}
        response = self.http.request("POST", f"/lists/{self.list_id}", json=payload)
        body = response.json() if response.content else {}
        keys = [m.key for m in members]
        if response.status_code != 200:
            return BatchOutcome(rejected={k: _reason(body, f"HTTP {response.status_code}") for k in keys})
        rejected = {}
        lowered = {k.lower(): k for k in keys}
        for error in body.get("errors") or []:
            key = lowered.get(str(error.get("email_address", "")).lower())
            if key:
                rejected[key] = f"{error.get('error_code', 'ERROR')}: {error.get('error', '')}"[:300]
        outcome = BatchOutcome({k: subscriber_hash(k) for k in keys if k not in rejected}, rejected)
        return self._tag(members, "active", outcome) if self.tag or self.tag_id else outcome

    def remove(self, members: list[Member]) -> BatchOutcome:
        outcome = BatchOutcome({m.key: subscriber_hash(m.key) for m in members})
        return self._tag(members, "inactive", outcome) if self.tag or self.tag_id else outcome

    def delete(self, keys: list[str]) -> BatchOutcome:
        return _delete_each(
            keys,
            lambda key: self.http.request(
                "POST", f"/lists/{self.list_id}/members/{subscriber_hash(key)}/actions/delete-permanent"
            ),
        )


class Webhook:
    def __init__(self, destination: Destination, credentials: Credentials, policy: RetryPolicy, **transport) -> None:
        secret, url = _need(credentials, destination)
        if not secret.startswith("whsec_"):
            raise DestinationConfigError(
                f"{destination.name}: {destination.env_prefix}_TOKEN must be a Standard Webhooks secret "
                "(whsec_<base64>)"
            )
        self.destination = destination
        self.signer = standardwebhooks.Webhook(secret)
        self.http = Transport(destination.name, url, {"Content-Type": "application/json"},
                              destination.requests_per_second, policy, destination.burst, **transport)  # fmt: skip

    def _send(self, kind: str, members: list[dict[str, object]], keys: list[str]) -> BatchOutcome:
        body = json.dumps({"type": f"intentlake.{kind}", "destination": self.destination.name, "members": members},
                          sort_keys=True, separators=(",", ":"), default=str)  # fmt: skip
        message_id = "msg_" + hashlib.sha256(body.encode()).hexdigest()[:32]
        now = datetime.now(UTC)
        headers = {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.signer.sign(message_id, now, body),
        }
        response = self.http.request("POST", "", content=body.encode(), headers=headers)
        if 200 <= response.status_code < 300:
            return BatchOutcome({k: None for k in keys})
        return BatchOutcome(rejected={k: f"HTTP {response.status_code}" for k in keys})

    def upsert(self, members: list[Member]) -> BatchOutcome:
        return self._send(
            "audience.upsert", [{"key": m.key, "fields": m.fields} for m in members], [m.key for m in members]
        )

    def remove(self, members: list[Member]) -> BatchOutcome:
        return self._send("audience.remove", [{"key": m.key} for m in members], [m.key for m in members])

    def delete(self, keys: list[str]) -> BatchOutcome:
        return self._send("person.erased", [{"key": k} for k in keys], keys)


def _text(value: object) -> str:
    """A field value as the CRMs take properties: text (numbers as written, None as empty)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def write_file(destination: Destination, folder: Path, members: Iterable[Member], source_version: int) -> Path:
    """The whole audience as one CSV or Parquet file plus a manifest (rows, sha256, gold version), each
    written to a temporary name and renamed, so a reader sees a complete file or none. `members` is read
    once, in the order given, a row group at a time (a large audience never sits in memory whole).
    Columns: the key, then the destination's mapped fields in config order. Returns the data file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    fmt = str(destination.options.get("format", "csv"))
    columns = ["key", *destination.fields.values()]
    target = folder / f"{destination.name}.{fmt}"
    temporary = folder / f".{target.name}.tmp"
    rows = 0
    if fmt == "csv":
        with temporary.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            for m in members:
                writer.writerow([m.key, *(_text(m.fields.get(c)) for c in columns[1:])])
                rows += 1
    else:
        schema = pa.schema([(c, pa.string()) for c in columns])
        with pq.ParquetWriter(temporary, schema) as writer:
            for chunk in chunks(members, 50_000):
                table = {c: [m.key if c == "key" else _text(m.fields.get(c)) for m in chunk] for c in columns}
                writer.write_table(pa.table(table, schema=schema))
                rows += len(chunk)
    digest = _seal(temporary, target)
    manifest = {
        "destination": destination.name,
        "file": target.name,
        "format": fmt,
        "rows": rows,
        "columns": columns,
        "sha256": digest,
        "gold_version": source_version,
        "written_at": datetime.now(UTC).isoformat(),
    }
    _write_manifest(folder / f"{destination.name}.manifest.json", manifest)
    return target


def remove_from_file(destination: Destination, folder: Path, keys: set[str]) -> int:
    """Erasure's reach into a file export: rewrite the destination's file without the rows of `keys`
    (streamed, then renamed over it) and its manifest with the new count and hash; the rows removed."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    fmt = str(destination.options.get("format", "csv"))
    target = folder / f"{destination.name}.{fmt}"
    manifest_path = folder / f"{destination.name}.manifest.json"
    if not target.exists():
        return 0
    temporary = folder / f".{target.name}.tmp"
    kept = removed = 0
    if fmt == "csv":
        with target.open(newline="") as source, temporary.open("w", newline="") as out:
            reader, writer = csv.reader(source), csv.writer(out)
            writer.writerow(next(reader))
            for row in reader:
                if row and row[0] in keys:
                    removed += 1
                else:
                    writer.writerow(row)
                    kept += 1
    else:
        import pyarrow as pa

        source = pq.ParquetFile(target)
        with pq.ParquetWriter(temporary, source.schema_arrow) as writer:
            for batch in source.iter_batches():
                mask = pc.invert(pc.is_in(batch.column("key"), value_set=pa.array(sorted(keys), pa.string())))
                left = batch.filter(mask)
                removed += batch.num_rows - left.num_rows
                kept += left.num_rows
                writer.write_batch(left)
    if not removed:
        temporary.unlink()
        return 0
    digest = _seal(temporary, target)
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        manifest.update(rows=kept, sha256=digest, erased_at=datetime.now(UTC).isoformat())
        _write_manifest(manifest_path, manifest)
    return removed


def _seal(temporary: Path, target: Path) -> str:
    """fsync a fully written temporary file and rename it over `target`; its sha256 (hex)."""
    digest = hashlib.sha256()
    with temporary.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
        os.fsync(fh.fileno())
    temporary.replace(target)
    return digest.hexdigest()


def _write_manifest(path: Path, manifest: dict) -> None:
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text(json.dumps(manifest, indent=2) + "\n")
    staged.replace(path)


def chunks(items: Iterable, size: int) -> Iterator[list]:
    """`items` in lists of `size` (the last one shorter), reading them once."""
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


ADAPTERS = {"hubspot": HubSpot, "braze": Braze, "mailchimp": Mailchimp, "webhook": Webhook}

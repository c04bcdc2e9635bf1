"""Local HTTP servers on loopback that behave as the destinations' APIs do, as each vendor documents them:
what the tests sync against, and the stand-ins `make demo` syncs to when no destination token is set. A
sync never uses them by itself: a destination reaches one only when its URL points there.

`ContractServer` is the common part: it checks the auth header the vendor asks for, enforces a request
rate the way the vendor does (429, with Retry-After when the vendor sends one), can be told to answer
the next requests with a 429 burst, 5xx or a stall longer than the client's timeout, and logs every
request it accepted (with its arrival time) for the tests to check. Vendor servers (subclasses) add the
endpoints and their documented limits and per-record errors.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fault:
    """What to answer instead of the real thing: status 429/5xx (with Retry-After seconds) or a stall."""

    status: int = 0
    retry_after: str | None = None
    stall_seconds: float = 0.0


@dataclass
class Received:
    method: str
    path: str
    body: object
    at: float  # time.monotonic() on arrival
    headers: dict[str, str]
    raw: bytes = b""


class ContractServer:
    """Serve `handle(method, path, body, headers) -> (status, body, headers)` on 127.0.0.1."""

    def __init__(self, token: str, rate_limit: tuple[int, float] | None = None) -> None:
        self.token = token
        self.rate_limit = rate_limit  # (requests, per seconds): more in any window is answered with 429
        self.faults: deque[Fault] = deque()
        self.received: list[Received] = []  # accepted requests (auth passed, not throttled, not faulted)
        self.refused: list[tuple[str, int]] = []  # (path, status) of every request answered otherwise
        self._arrivals: deque[float] = deque()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the vendors' APIs: no new connection per request
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms wait for an ACK between

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body, headers = server._dispatch(method, self.path, raw, dict(self.headers.items()))
                payload = b"" if body is None else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    if payload:
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def log_message(self, *args: object) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> ContractServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- what subclasses override
    def authorized(self, headers: dict[str, str]) -> bool:
        return headers.get("Authorization") == f"Bearer {self.token}"

    def throttled(self) -> tuple[int, object, dict[str, str]]:
        """The vendor's answer to a request over its rate limit."""
        return 429, {"message": "rate limit exceeded"}, {"Retry-After": "1"}

    def handle(self, method: str, path: str, body: object, headers: dict[str, str]) -> tuple[int, object, dict]:
        return 404, {"message": f"no such endpoint {method} {path}"}, {}

    # -- the common part
    def _dispatch(self, method: str, path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, object, dict]:
        now = time.monotonic()
        with self._lock:
            if not self.authorized(headers):
                self.refused.append((path, 401))
                return 401, {"message": "authentication credentials not valid"}, {}
            fault = self.faults.popleft() if self.faults else None
            if fault is None and self.rate_limit is not None:
                limit, window = self.rate_limit
                while self._arrivals and self._arrivals[0] <= now - window:
                    self._arrivals.popleft()
                if len(self._arrivals) >= limit:
                    self.refused.append((path, 429))
                    return self.throttled()
                self._arrivals.append(now)
        if fault is not None:
            if fault.stall_seconds:
                time.sleep(fault.stall_seconds)
                self.refused.append((path, 0))
                return 503, None, {}
            self.refused.append((path, fault.status))
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return fault.status, {"message": "injected"}, headers
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return 400, {"message": "body is not JSON"}, {}
        with self._lock:
            self.received.append(Received(method, path, body, now, headers, raw))
            return self.handle(method, path, body, headers)


def _valid_email(value: object) -> bool:
    return isinstance(value, str) and value.count("@") == 1 and "." in value.split("@")[1] and " " not in value


class HubSpotServer(ContractServer):
    """CRM v3 contacts: batch upsert by email (100 inputs at most: 400 VALIDATION_ERROR past that), 207
    Multi-Status naming the inputs with invalid emails, list membership add-and-remove by record id,
    GDPR delete. HubSpot's 429 carries policyName and no Retry-After."""

    MAX_INPUTS = 100

    def __init__(self, token: str, rate_limit: tuple[int, float] | None = None) -> None:
        super().__init__(token, rate_limit)
        self.contacts: dict[str, dict] = {}  # email -> {"id", "properties"}
        self.lists: dict[str, set[str]] = {}  # list id -> record ids
        self.upserts: list[str] = []  # every email upserted, in order (a record sent twice shows twice)

    def throttled(self):
        return 429, {"status": "error", "message": "You have reached your secondly limit.",
                     "errorType": "RATE_LIMIT", "policyName": "SECONDLY"}, {}  # fmt: skip

    def handle(self, method, path, body, headers):
        if (method, path) == ("POST", "/crm/v3/objects/contacts/batch/upsert"):
            inputs = (body or {}).get("inputs") or []
            if len(inputs) > self.MAX_INPUTS:
                return 400, {"status": "error", "category": "VALIDATION_ERROR",
                             "message": f"Batch input limit is {self.MAX_INPUTS}, got {len(inputs)}"}, {}  # fmt: skip
            results, bad = [], []
            for item in inputs:
                email = str(item.get("id", ""))
                if item.get("idProperty") != "email" or not _valid_email(email):
                    bad.append(email)
                    continue
                contact = self.contacts.setdefault(
                    email.lower(), {"id": str(1000 + len(self.contacts)), "properties": {}}
                )
                contact["properties"].update(item.get("properties") or {}, email=email.lower())
                self.upserts.append(email.lower())
                results.append({"id": contact["id"], "properties": dict(contact["properties"])})
            body = {"status": "COMPLETE", "results": results}
            if bad:
                body["numErrors"] = len(bad)
                body["errors"] = [{"status": "error", "category": "VALIDATION_ERROR",
                                   "message": "Property values were not valid: invalid email address",
                                   "context": {"ids": bad}}]  # fmt: skip
                return 207, body, {}
            return 200, body, {}
        if method == "PUT" and path.startswith("/crm/v3/lists/") and path.endswith("/memberships/add-and-remove"):
            list_id = path.split("/")[4]
            members = self.lists.setdefault(list_id, set())
            known = {c["id"] for c in self.contacts.values()}
            add = [r for r in body.get("recordIdsToAdd", []) if r in known]
            remove = [r for r in body.get("recordIdsToRemove", []) if r in members]
            members.update(add)
            members.difference_update(remove)
            missing = [
                r for r in [*body.get("recordIdsToAdd", []), *body.get("recordIdsToRemove", [])] if r not in known
            ]
            return 200, {"recordIdsAdded": add, "recordIdsRemoved": remove, "recordIdsMissing": missing}, {}
        if (method, path) == ("POST", "/crm/v3/objects/contacts/gdpr-delete"):
            contact = self.contacts.pop(str(body.get("objectId", "")).lower(), None)
            if contact is None:
                return 404, {"status": "error", "category": "OBJECT_NOT_FOUND", "message": "contact not found"}, {}
            for members in self.lists.values():
                members.discard(contact["id"])
            return 204, None, {}
        return super().handle(method, path, body, headers)


class BrazeServer(ContractServer):
    """/users/track (75 objects per request, 400 past that; errors[] with the object's index for a bad
    email), /users/delete (50 identifiers)."""

    MAX_OBJECTS = 75

    def __init__(self, token: str, rate_limit: tuple[int, float] | None = None) -> None:
        super().__init__(token, rate_limit)
        self.users: dict[str, dict] = {}  # external_id or email -> attributes
        self.tracked: list[str] = []

    def handle(self, method, path, body, headers):
        if (method, path) == ("POST", "/users/track"):
            objects = (body or {}).get("attributes") or []
            if len(objects) > self.MAX_OBJECTS:
                return (
                    400,
                    {"message": f"Received {len(objects)} attributes objects; the limit is {self.MAX_OBJECTS}"},
                    {},
                )
            errors = []
            for index, obj in enumerate(objects):
                key = obj.get("external_id") or obj.get("email")
                if "email" in obj and not _valid_email(obj["email"]):
                    errors.append({"type": "'email' is not a valid email address", "input_array": "attributes",
                                   "index": index})  # fmt: skip
                    continue
                attributes = {k: v for k, v in obj.items() if k not in ("external_id", "email")}
                self.users.setdefault(str(key), {}).update(attributes)
                self.tracked.append(str(key))
            answer = {"message": "success", "attributes_processed": len(objects) - len(errors)}
            if errors:
                answer["errors"] = errors
            return 201, answer, {}
        if (method, path) == ("POST", "/users/delete"):
            ids = body.get("external_ids") or body.get("email_addresses") or []
            if len(ids) > 50:
                return 400, {"message": "at most 50 identifiers per request"}, {}
            deleted = sum(1 for i in ids if self.users.pop(str(i), None) is not None)
            return 201, {"deleted": deleted, "message": "success"}, {}
        return super().handle(method, path, body, headers)


class MailchimpServer(ContractServer):
    """Batch subscribe/update (500 members per call, 400 past that; errors[] per invalid email), tags by
    subscriber hash, delete-permanent. HTTP Basic with any user name and the API key as password."""

    MAX_MEMBERS = 500

    def __init__(self, token: str, rate_limit: tuple[int, float] | None = None) -> None:
        super().__init__(token, rate_limit)
        self.members: dict[str, dict] = {}  # subscriber hash -> {"email_address", "merge_fields", "tags"}
        self.upserts: list[str] = []

    def authorized(self, headers):
        import base64

        value = headers.get("Authorization", "")
        if not value.startswith("Basic "):
            return False
        return base64.b64decode(value[6:]).decode().split(":", 1)[-1] == self.token

    def handle(self, method, path, body, headers):
        import hashlib

        parts = path.strip("/").split("/")
        if method == "POST" and len(parts) == 2 and parts[0] == "lists":
            members = (body or {}).get("members") or []
            if len(members) > self.MAX_MEMBERS:
                return 400, {"title": "Invalid Resource", "status": 400,
                             "detail": f"You can only add up to {self.MAX_MEMBERS} members per call"}, {}  # fmt: skip
            new, updated, errors = [], [], []
            for m in members:
                email = str(m.get("email_address", ""))
                if not _valid_email(email):
                    errors.append(
                        {
                            "email_address": email,
                            "error": f"{email} looks fake or invalid, please enter a real email address.",
                            "error_code": "ERROR_GENERIC",
                            "field": "email_address",
                        }
                    )
                    continue
                member_hash = hashlib.md5(email.lower().encode()).hexdigest()
                existing = self.members.get(member_hash)
                record = existing or {"email_address": email.lower(), "merge_fields": {}, "tags": set(),
                                      "status": m.get("status_if_new")}  # fmt: skip
                record["merge_fields"].update(m.get("merge_fields") or {})
                self.members[member_hash] = record
                self.upserts.append(email.lower())
                (updated if existing else new).append({"id": member_hash, "email_address": email.lower()})
            counts = {"total_created": len(new), "total_updated": len(updated), "error_count": len(errors)}
            return 200, {"new_members": new, "updated_members": updated, "errors": errors, **counts}, {}
        if method == "POST" and len(parts) == 4 and parts[2] == "segments":  # batch add/remove on a static segment
            adding, removing = body.get("members_to_add") or [], body.get("members_to_remove") or []
            if len(adding) > self.MAX_MEMBERS or len(removing) > self.MAX_MEMBERS:
                return 400, {"title": "Invalid Resource", "status": 400,
                             "detail": f"at most {self.MAX_MEMBERS} emails to add or remove per call"}, {}  # fmt: skip
            added, removed, missing = [], [], []
            for email, into in [(e, True) for e in adding] + [(e, False) for e in removing]:
                record = self.members.get(hashlib.md5(str(email).lower().encode()).hexdigest())
                if record is None:
                    missing.append(email)
                    continue
                (record.setdefault("segments", set()).add if into else
                 record.setdefault("segments", set()).discard)(parts[3])  # fmt: skip
                (added if into else removed).append({"email_address": str(email).lower()})
            errors = [{"email_addresses": missing, "error": "Email addresses not on the list"}] if missing else []
            return 200, {"members_added": added, "members_removed": removed, "errors": errors,
                         "total_added": len(added), "total_removed": len(removed),
                         "error_count": len(missing)}, {}  # fmt: skip
        if method == "POST" and len(parts) == 5 and parts[2] == "members" and parts[4] == "tags":
            record = self.members.get(parts[3])
            if record is None:
                return 404, {"title": "Resource Not Found", "status": 404, "detail": "member not found"}, {}
            for tag in body.get("tags", []):
                (record["tags"].add if tag["status"] == "active" else record["tags"].discard)(tag["name"])
            return 204, None, {}
        if method == "POST" and len(parts) == 6 and parts[4:] == ["actions", "delete-permanent"]:
            if self.members.pop(parts[3], None) is None:
                return 404, {"title": "Resource Not Found", "status": 404, "detail": "member not found"}, {}
            return 204, None, {}
        return super().handle(method, path, body, headers)


class WebhookReceiver(ContractServer):
    """A receiver that verifies each request with the Standard Webhooks library and its secret (rejecting
    a bad signature or a timestamp outside the ±5 min window with 401) and keeps what it accepted."""

    def __init__(self, secret: str) -> None:
        super().__init__(token="")
        import standardwebhooks

        self.verifier = standardwebhooks.Webhook(secret)
        self.messages: list[dict] = []
        self.raw: list[tuple[dict[str, str], bytes]] = []

    def authorized(self, headers):
        return True  # the signature is checked in handle, over the exact body

    def handle(self, method, path, body, headers):
        lowered = {k.lower(): v for k, v in headers.items()}
        raw = self.received[-1].raw.decode()  # the exact bytes that were signed
        wanted = {k: lowered.get(k, "") for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
        try:
            self.verifier.verify(raw, wanted)
        except Exception as exc:  # the library's WebhookVerificationError
            return 401, {"message": f"signature: {exc}"}, {}
        self.messages.append({"id": lowered["webhook-id"], **body})
        return 204, None, {}

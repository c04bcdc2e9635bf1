"""The open event vocabulary (config/event_vocabulary.yaml): each source format's event names -> canonical types.

Small, frozen and picklable, so the bronze job reads it once per micro-batch on the driver and ships it to the
workers with the parser. A name a source's mapping does not list becomes a `custom` event, unless the source
is strict; `custom_features` names the custom events rules and models may read as per-session counts.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from spark_jobs.contracts import CANONICAL_SCHEMA_VERSIONS, canonical_event_schema
from spark_jobs.errors import InvalidConfigError, read_yaml
from spark_jobs.settings import REPO_ROOT

CUSTOM = "custom"
SOURCES = ("segment", "web_sdk", "mobile_sdk", "snowplow")
_SECTIONS = {"segment": ("events",), "web_sdk": ("events",), "mobile_sdk": ("events",),
             "snowplow": ("events", "schemas")}  # fmt: skip
_FEATURE_KEY = re.compile(r"[a-z][a-z0-9_]{0,47}")
_SCHEMA_KEY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(#[A-Za-z0-9_.-]+)?")
BUNDLED_FILE = REPO_ROOT / "config" / "event_vocabulary.yaml"


def canonical_types() -> tuple[str, ...]:
    """The event types of the newest canonical schema, custom left out (it is what unlisted names become)."""
    enum = canonical_event_schema(max(CANONICAL_SCHEMA_VERSIONS))["properties"]["event_type"]["enum"]
    return tuple(t for t in enum if t != CUSTOM)


@dataclass(frozen=True)
class SourceVocabulary:
    strict: bool
    events: tuple[tuple[str, str], ...]  # (source name, canonical type)
    schemas: tuple[tuple[str, str], ...] = ()  # Snowplow: (vendor/name[#type], canonical type)


@dataclass(frozen=True)
class Vocabulary:
    path: str  # the file it came from: rejections for strict sources name it
    sources: tuple[tuple[str, SourceVocabulary], ...]
    # (feature key, the custom event names it counts: one action as each source spells it): custom_<key> columns
    custom_features: tuple[tuple[str, tuple[str, ...]], ...]

    def source(self, name: str) -> SourceVocabulary:
        return dict(self.sources).get(name, SourceVocabulary(strict=False, events=()))

    @functools.cached_property
    def _lookup(self) -> dict[tuple[str, str], dict[str, str]]:
        return {(name, section): dict(getattr(vocab, section)) for name, vocab in self.sources
                for section in ("events", "schemas")}  # fmt: skip

    def mapping(self, source: str, section: str = "events") -> dict[str, str]:
        return self._lookup.get((source, section), {})

    def is_strict(self, source: str) -> bool:
        return self.source(source).strict

    @property
    def feature_columns(self) -> dict[str, tuple[str, ...]]:
        """custom_<key> -> the custom event names whose counts it adds up."""
        return {f"custom_{key}": name for key, name in self.custom_features}


def load_vocabulary(path: Path = BUNDLED_FILE) -> Vocabulary:
    """Read and check the vocabulary file; an error names the source, the section and the entry."""
    doc = read_yaml(path)
    if not isinstance(doc, dict) or set(doc) - {"sources", "custom_features"}:
        raise InvalidConfigError(path, "file", "expected a mapping with sources (and custom_features)")
    raw_sources = doc.get("sources") or {}
    if not isinstance(raw_sources, dict):
        raise InvalidConfigError(path, "sources", f"must map source formats ({', '.join(SOURCES)}) to mappings")
    targets = canonical_types()
    sources = []
    for name, spec in raw_sources.items():
        if name not in SOURCES:
            raise InvalidConfigError(path, f"sources: {name}", f"not a source format with named events; one of "
                                     f"{list(SOURCES)}")  # fmt: skip
        allowed = {"strict", *_SECTIONS[name]}
        if not isinstance(spec, dict) or set(spec) - allowed:
            raise InvalidConfigError(path, f"sources: {name}", f"must be a mapping with {sorted(allowed)}")
        strict = spec.get("strict", False)
        if not isinstance(strict, bool):
            raise InvalidConfigError(path, f"sources: {name}: strict", "must be true or false")
        sections = {}
        for section in _SECTIONS[name]:
            entries = spec.get(section) or {}
            if not isinstance(entries, dict):
                raise InvalidConfigError(path, f"sources: {name}: {section}", "must map names to canonical types")
            for key, target in entries.items():
                where = f"sources: {name}: {section}: {key}"
                if not isinstance(key, str) or not key.strip() or len(key) > 256:
                    raise InvalidConfigError(path, where, "a name must be non-empty text of at most 256 characters")
                if section == "schemas" and not _SCHEMA_KEY.fullmatch(key):
                    raise InvalidConfigError(path, where, "must be an Iglu vendor/name (no version), optionally "
                                             "followed by #<type of the event's data>")  # fmt: skip
                if target not in targets:
                    raise InvalidConfigError(path, where, f"{target!r} is not a canonical event type; one of "
                                             f"{list(targets)} (unlisted names are kept as custom events)")  # fmt: skip
            sections[section] = tuple((str(k), str(v)) for k, v in entries.items())
        sources.append((name, SourceVocabulary(strict=strict, **sections)))
    raw_features = doc.get("custom_features") or {}
    if not isinstance(raw_features, dict):
        raise InvalidConfigError(path, "custom_features", "must map feature keys to custom event names")
    features, names = [], set()
    for key, spec in raw_features.items():
        where = f"custom_features: {key}"
        if not isinstance(key, str) or not _FEATURE_KEY.fullmatch(key):
            raise InvalidConfigError(path, where, "a key must be lower-case letters, digits and _ (it becomes the "
                                     "column custom_<key>)")  # fmt: skip
        spellings = spec if isinstance(spec, list) else [spec]
        if not spellings:
            raise InvalidConfigError(path, where, "must name at least one custom event")
        for event_name in spellings:
            if not isinstance(event_name, str) or not event_name.strip() or len(event_name) > 256:
                raise InvalidConfigError(path, where, "must name a custom event, or list its names per source "
                                         "(non-empty texts, at most 256 characters)")  # fmt: skip
            if event_name in names:
                raise InvalidConfigError(path, where, f"{event_name!r} is already counted under another key")
            names.add(event_name)
        features.append((key, tuple(spellings)))
    return Vocabulary(str(path), tuple(sources), tuple(features))


BUNDLED_VOCABULARY = load_vocabulary()


def vocabulary_at(path: Path) -> Vocabulary:
    """The configured vocabulary file, or the bundled one when the config folder has none (a folder made
    before the vocabulary existed): what the jobs read, so they agree with `vocabulary_beside`."""
    return load_vocabulary(path) if Path(path).exists() else BUNDLED_VOCABULARY


def vocabulary_beside(path: Path) -> Vocabulary:
    """The vocabulary in the config folder `path` is in (config files travel together; rules read its
    custom_<key> features), else the bundled one."""
    candidate = Path(path).parent / BUNDLED_FILE.name
    return load_vocabulary(candidate) if candidate.exists() else BUNDLED_VOCABULARY

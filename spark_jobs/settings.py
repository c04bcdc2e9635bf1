"""One settings object for the whole project, read from INTENTLAKE_* environment variables.

Every path, table location, trigger, timeout and config-file location comes from here; no module reads
the environment itself. `.env.example` documents each variable with its default.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path

from spark_jobs.registry import TABLES

REPO_ROOT = Path(__file__).resolve().parents[1]

# TABLES: every table, in data-flow order, from the contracts in tables/ (spark_jobs/registry.py)
__all__ = [
    "REPO_ROOT",
    "TABLES",
    "Settings",
    "SettingsError",
    "interval_seconds",
    "parse_kafka_options",
    "setting_default",
]


# Settings holding a duration such as "5 minutes"; checked when Settings is built.
INTERVAL_SETTINGS = (
    "dedup_window",
    "max_clock_skew",
    "max_event_age",
    "session_timeout",
    "max_session_length",
    "allowed_lateness",
)


# Bronze dedup keys: (session_id, event_id) as the seeds ask (event_id alone when a source sends no session
# id), or event_id alone for sources whose ids are globally unique.
DEDUP_KEY_CHOICES = ("session_id,event_id", "event_id")
QUALITY_POLICIES = ("quarantine", "halt")
MIN_HASH_KEY_CHARS = 32  # INTENTLAKE_HASH_KEY is refused when shorter (spark_jobs/privacy.py uses it)


# Kafka client security (spark_jobs/kafka.py turns these into kafka.* options).
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
KAFKA_TRUSTSTORE_TYPES = ("JKS", "PKCS12", "PEM")
# Kafka client configs that have their own setting: INTENTLAKE_KAFKA_OPTIONS may not set them, so one value
# never hides another (and the SASL password never sits in the passthrough).
KAFKA_OWNED_OPTIONS = {
    "bootstrap.servers": "INTENTLAKE_KAFKA_BOOTSTRAP",
    "security.protocol": "INTENTLAKE_KAFKA_SECURITY_PROTOCOL",
    "sasl.mechanism": "INTENTLAKE_KAFKA_SASL_MECHANISM",
    "sasl.jaas.config": "INTENTLAKE_KAFKA_SASL_USERNAME and INTENTLAKE_KAFKA_SASL_PASSWORD",
    "ssl.truststore.location": "INTENTLAKE_KAFKA_SSL_TRUSTSTORE_LOCATION",
    "ssl.truststore.type": "INTENTLAKE_KAFKA_SSL_TRUSTSTORE_TYPE",
    "ssl.truststore.password": "INTENTLAKE_KAFKA_SSL_TRUSTSTORE_PASSWORD",
}


class SettingsError(ValueError):
    """An environment variable holds a value intentlake cannot use."""


def _env(name: str, default: str) -> str:
    return os.environ.get(f"INTENTLAKE_{name}", default)


def _env_path(name: str, default: Path) -> Path:
    """A path setting, resolved. A URI (s3a://, abfss://, ...) is refused by name: Path would turn it into a
    local directory under the working directory, and the lakehouse would silently be written there."""
    raw = _env(name, str(default))
    if "://" in raw:
        raise SettingsError(
            f"INTENTLAKE_{name}={raw!r} is a URI: paths must be file-system paths that the driver and every "
            "executor see alike (the same machine, NFS, or object storage mounted as a file system); object-store "
            "URIs are not supported yet (README: Beyond one machine)"
        )
    return Path(raw).resolve()


def _env_int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"INTENTLAKE_{name}={raw!r} is not a whole number") from None


def interval_seconds(text: str, name: str = "interval") -> int:
    """'5 minutes' -> 300. Accepts seconds, minutes, hours and days, singular or plural."""
    units = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
    parts = str(text).split()
    if len(parts) != 2 or not parts[0].isdigit() or parts[1].rstrip("s") not in units:
        raise SettingsError(f"{name}={text!r}: expected '<whole number> <seconds|minutes|hours|days>'")
    return int(parts[0]) * units[parts[1].rstrip("s")]


def _parse_confs(raw: str) -> dict[str, str]:
    """'a=1,b=2' -> {'a': '1', 'b': '2'} (extra Spark confs for a cluster)."""
    confs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SettingsError(f"INTENTLAKE_SPARK_CONF item {item!r} is not key=value")
        confs[key.strip()] = value.strip()
    return confs


def parse_kafka_options(raw: str) -> dict[str, str]:
    """INTENTLAKE_KAFKA_OPTIONS 'a.b=1,c.d=2' -> {'a.b': '1', 'c.d': '2'}: extra Kafka client configs.

    A leading 'kafka.' on a key is accepted and dropped. Errors name the item by position and never echo a
    value: the passthrough may hold a keystore password.
    """
    options: dict[str, str] = {}
    for position, item in enumerate(filter(None, (part.strip() for part in raw.split(","))), start=1):
        key, sep, value = item.partition("=")
        key = key.strip().removeprefix("kafka.")
        if not sep or not key:
            raise SettingsError(f"INTENTLAKE_KAFKA_OPTIONS item {position} is not key=value")
        if key in KAFKA_OWNED_OPTIONS:
            raise SettingsError(f"INTENTLAKE_KAFKA_OPTIONS may not set {key}: use {KAFKA_OWNED_OPTIONS[key]}")
        options[key] = value.strip()
    return options


@dataclass(frozen=True)
class Settings:
    """Where everything lives and how the jobs run. Build it with `Settings.from_env()`."""

    lakehouse: Path
    landing: Path
    checkpoints: Path
    truth: Path
    jars_dir: Path
    config_dir: Path
    lock_dir: Path  # the lakehouse lock (spark_jobs/locks.py): <lakehouse>/_locks unless set
    expectations_dir: Path = REPO_ROOT / "expectations"  # the data-quality suites (one per table)
    spark_master: str = "local[*]"
    spark_conf: dict[str, str] = field(default_factory=dict)
    shuffle_partitions: int = 4
    spark_ui: bool = False
    # Spark's generated code (whole-stage and expression codegen): off by default, as a micro-batch of a few
    # thousand rows runs ~300 small queries whose Java compiling costs more than it saves (bench/README.md,
    # "Generated code"); on for a cluster whose batches are millions of rows
    codegen: bool = False
    # Bronze
    trigger: str = "availableNow"  # or a processing-time interval such as "30 seconds"
    max_files_per_trigger: int = 64
    dedup_window: str = "24 hours"
    max_record_bytes: int = 1_048_576  # larger input records are quarantined as oversize_record
    max_clock_skew: str = "1 hour"  # occurred_at later than received_at by more: future_timestamp
    max_event_age: str = "30 days"  # occurred_at earlier than received_at by more: stale_timestamp
    dedup_keys: str = "session_id,event_id"  # one of DEDUP_KEY_CHOICES; fixed for the life of a checkpoint
    quality_policy: str = "quarantine"  # rows failing expectations/bronze_events.json: quarantine them, or halt
    schema_dir: Path = REPO_ROOT / "tables" / "events"  # canonical event schemas, re-read every bronze batch
    # Kafka (production event stream; the landing zone is the embedded default)
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_topic: str = "intentlake.events"
    max_offsets_per_trigger: int = 200_000
    # Kafka security: one of KAFKA_SECURITY_PROTOCOLS; SASL_* needs a username and password (one of
    # KAFKA_SASL_MECHANISMS); SSL/SASL_SSL trust the JVM's CAs unless a truststore (or PEM CA file) is given
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)  # a secret: never in repr, logs or errors
    kafka_ssl_truststore_location: str = ""  # a path on every executor (not resolved here), or empty
    kafka_ssl_truststore_type: str = "JKS"  # one of KAFKA_TRUSTSTORE_TYPES; PEM for a CA certificate file
    kafka_ssl_truststore_password: str = field(default="", repr=False)  # JKS/PKCS12 only
    # Any other Kafka client config, "key=value,key=value" (each becomes kafka.<key>); may hold secrets
    kafka_options: str = field(default="", repr=False)
    # Silver
    session_timeout: str = "5 minutes"
    max_session_length: str = "4 hours"  # a longer run of activity is split into sessions of at most this
    silver_max_files_per_trigger: int = 1000  # bronze Delta files per silver micro-batch (Delta's default)
    allowed_lateness: str = "30 minutes"  # event time behind the newest event before sessions close
    # Silver: identity is resolved over the whole graph on the driver (~1 KB per edge) while silver.identity_edges
    # holds at most this many rows; above, over each batch's neighbourhood only (spark_jobs/silver/identity.py)
    identity_collect_max_edges: int = 200_000
    # Privacy: hours between an erasure and the VACUUM that removes older table versions holding the person
    # (below 168 the pipeline must be paused: streams and time-travel reads lose files they may still need)
    erasure_purge_hours: int = 168
    # Privacy: the secret key of every keyed hash (email identifiers, erasure subjects; spark_jobs/privacy.py).
    # Unset, one is generated once into <lakehouse>/_secrets/hash_key. Never in repr, logs or errors.
    hash_key: str = field(default="", repr=False)
    # Privacy: days bronze.events keeps context.ip whole; maintenance then cuts it to its /24 (IPv4) or /48
    # (IPv6) network. 0: every row's IP is cut at the next maintenance run, whatever its age.
    ip_retention_days: int = 30
    # The lakehouse lock: the longest a batch waits for erasure or maintenance, and they for batches
    lock_timeout_seconds: int = 3600
    # Segment syncs: acknowledgements per ops.sync_state commit (what a killed sync may send again)
    sync_commit_every: int = 2000
    # Segment syncs: runs in which a destination may refuse the same call before it is a dead letter (not sent
    # again until the person's payload changes or a --full run; reported in ops.sync_runs.dead_lettered)
    sync_max_tries: int = 3
    # Online store (spark_jobs/serving/online_store.py): the Redis the decision API reads, e.g.
    # redis://127.0.0.1:16379/0 (`make redis-up`); empty: no online store. May hold a password: never in repr.
    redis_url: str = field(default="", repr=False)
    redis_prefix: str = "il:"  # every key the store writes starts with it (several lakehouses, one Redis)
    online_ttl_days: int = 30  # a person's keys expire this many days after their last update
    # Decision API (spark_jobs/serving/api.py): its port on loopback; the keys a caller must send (comma-separated
    # secrets, never in repr; unset: one generated into <lakehouse>/_secrets/api_key); how long a request waits
    # for the online store before it answers without it (degraded)
    api_port: int = 8700
    api_keys: str = field(default="", repr=False)
    api_store_timeout_ms: int = 50
    # Collector (spark_jobs/serving/collector.py): its port on loopback; Segment write keys (comma-separated
    # secrets; unset: one generated into <lakehouse>/_secrets/write_key); where events go (landing: the
    # landing zone's files; kafka: the topic above); how many events may wait for the sink before it answers 503
    collector_port: int = 8701
    collector_write_keys: str = field(default="", repr=False)
    collector_sink: str = "landing"
    collector_max_pending: int = 100_000

    def __post_init__(self) -> None:
        if self.hash_key and len(self.hash_key) < MIN_HASH_KEY_CHARS:  # its length only: the key is a secret
            raise SettingsError(f"INTENTLAKE_HASH_KEY has {len(self.hash_key)} characters: use at least "
                                f"{MIN_HASH_KEY_CHARS}, e.g. the output of `openssl rand -hex 32`")  # fmt: skip
        for name in ("api_port", "collector_port"):
            if not 0 < getattr(self, name) < 65536:
                raise SettingsError(f"INTENTLAKE_{name.upper()}={getattr(self, name)}: use a TCP port 1-65535")
        if self.collector_sink not in ("landing", "kafka"):
            raise SettingsError(f"INTENTLAKE_COLLECTOR_SINK={self.collector_sink!r}: use 'landing' or 'kafka'")
        if self.api_store_timeout_ms < 1:
            raise SettingsError(f"INTENTLAKE_API_STORE_TIMEOUT_MS={self.api_store_timeout_ms}: use 1 or more ms")
        if self.online_ttl_days < 1:
            raise SettingsError(f"INTENTLAKE_ONLINE_TTL_DAYS={self.online_ttl_days}: use 1 or more days")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError("INTENTLAKE_REDIS_URL must start with redis://, rediss:// or unix://")
        if self.ip_retention_days < 0:
            raise SettingsError(f"INTENTLAKE_IP_RETENTION_DAYS={self.ip_retention_days}: use 0 or more days")
        for name in INTERVAL_SETTINGS:  # a bad interval is named at start-up, not mid-stream
            interval_seconds(getattr(self, name), f"INTENTLAKE_{name.upper()}")
        for name, choices in (("dedup_keys", DEDUP_KEY_CHOICES), ("quality_policy", QUALITY_POLICIES)):
            if getattr(self, name) not in choices:
                raise SettingsError(f"INTENTLAKE_{name.upper()}={getattr(self, name)!r}: use one of {choices}")
        self._check_kafka_security()

    def _check_kafka_security(self) -> None:
        """Name the variable when the Kafka security settings cannot work together (never echo a secret)."""
        for name, choices in (
            ("kafka_security_protocol", KAFKA_SECURITY_PROTOCOLS),
            ("kafka_sasl_mechanism", KAFKA_SASL_MECHANISMS),
            ("kafka_ssl_truststore_type", KAFKA_TRUSTSTORE_TYPES),
        ):
            if getattr(self, name) not in choices:
                raise SettingsError(f"INTENTLAKE_{name.upper()}={getattr(self, name)!r}: use one of {choices}")
        protocol = self.kafka_security_protocol
        uses_sasl, uses_tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
        credentials = {"INTENTLAKE_KAFKA_SASL_USERNAME": self.kafka_sasl_username,
                       "INTENTLAKE_KAFKA_SASL_PASSWORD": self.kafka_sasl_password}  # fmt: skip
        if uses_sasl and not all(credentials.values()):
            missing = " and ".join(name for name, value in credentials.items() if not value)
            raise SettingsError(
                f"INTENTLAKE_KAFKA_SECURITY_PROTOCOL={protocol!r} authenticates with SASL: set {missing}"
            )
        if not uses_sasl and any(credentials.values()):
            given = " and ".join(name for name, value in credentials.items() if value)
            raise SettingsError(
                f"{given} set, but INTENTLAKE_KAFKA_SECURITY_PROTOCOL={protocol!r} sends no credentials: "
                "use SASL_PLAINTEXT or SASL_SSL"
            )
        truststore = {"INTENTLAKE_KAFKA_SSL_TRUSTSTORE_LOCATION": self.kafka_ssl_truststore_location,
                      "INTENTLAKE_KAFKA_SSL_TRUSTSTORE_PASSWORD": self.kafka_ssl_truststore_password}  # fmt: skip
        if not uses_tls and any(truststore.values()):
            given = " and ".join(name for name, value in truststore.items() if value)
            raise SettingsError(
                f"{given} set, but INTENTLAKE_KAFKA_SECURITY_PROTOCOL={protocol!r} does not use TLS: "
                "use SSL or SASL_SSL"
            )
        parse_kafka_options(self.kafka_options)

    @classmethod
    def from_env(cls) -> Settings:
        """Every field from INTENTLAKE_<FIELD NAME>, falling back to the field's default above."""
        lakehouse = _env_path("LAKEHOUSE", REPO_ROOT / "lakehouse")
        values: dict[str, object] = {}
        for f in fields(cls):
            if f.default is MISSING:  # paths and spark_conf: derived below
                continue
            name = f.name.upper()
            if isinstance(f.default, Path):
                values[f.name] = _env_path(name, f.default)
            elif isinstance(f.default, bool):
                values[f.name] = _env(name, str(f.default).lower()).lower() in ("1", "true", "yes")
            elif isinstance(f.default, int):
                values[f.name] = _env_int(name, f.default)
            else:
                values[f.name] = _env(name, str(f.default))
        return cls(
            lakehouse=lakehouse,
            landing=_env_path("LANDING", lakehouse / "landing"),
            checkpoints=_env_path("CHECKPOINTS", lakehouse / "_checkpoints"),
            truth=_env_path("TRUTH", lakehouse / "_truth"),
            jars_dir=_env_path("JARS_DIR", REPO_ROOT / ".cache" / "jars"),
            config_dir=_env_path("CONFIG_DIR", REPO_ROOT / "config"),
            lock_dir=_env_path("LOCK_DIR", lakehouse / "_locks"),
            spark_conf=_parse_confs(_env("SPARK_CONF", "")),
            **values,
        )

    def with_root(self, lakehouse: Path) -> Settings:
        """The same settings with every data path moved under another lakehouse root (tests, demo)."""
        lakehouse = lakehouse.resolve()
        return replace(
            self,
            lakehouse=lakehouse,
            landing=lakehouse / "landing",
            checkpoints=lakehouse / "_checkpoints",
            truth=lakehouse / "_truth",
            lock_dir=lakehouse / "_locks",
        )

    def table_path(self, table: str) -> Path:
        """'bronze.events' -> <lakehouse>/bronze/events."""
        layer, _, name = table.partition(".")
        if not name:
            raise SettingsError(f"table name {table!r} must be <layer>.<name>")
        return self.lakehouse / layer / name

    def checkpoint(self, job: str) -> Path:
        return self.checkpoints / job

    @property
    def dedup_key_columns(self) -> tuple[str, ...]:
        return tuple(self.dedup_keys.split(","))

    @property
    def scoring_file(self) -> Path:
        return self.config_dir / "scoring.yaml"

    @property
    def models_file(self) -> Path:
        return self.config_dir / "models.yaml"

    @property
    def content_rules_file(self) -> Path:
        return self.config_dir / "content_rules.yaml"

    @property
    def kpis_file(self) -> Path:
        return self.config_dir / "kpis.yaml"

    @property
    def reports_dir(self) -> Path:
        """Where the KPI reports and the Data Docs site are written: <lakehouse>/reports."""
        return self.lakehouse / "reports"

    @property
    def data_docs_dir(self) -> Path:
        """The Great Expectations Data Docs site (index.html) the KPI report links to."""
        return self.reports_dir / "data_docs"

    @property
    def segments_file(self) -> Path:
        return self.config_dir / "segments.yaml"

    @property
    def micro_moments_file(self) -> Path:
        return self.config_dir / "micro_moments.yaml"

    @property
    def context_file(self) -> Path:
        return self.config_dir / "context.yaml"

    @property
    def identity_file(self) -> Path:
        return self.config_dir / "identity.yaml"

    @property
    def user_features_file(self) -> Path:
        return self.config_dir / "user_features.yaml"

    @property
    def event_vocabulary_file(self) -> Path:
        return self.config_dir / "event_vocabulary.yaml"

    @property
    def destinations_file(self) -> Path:
        return self.config_dir / "destinations.yaml"

    @property
    def send_times_file(self) -> Path:
        return self.config_dir / "send_times.yaml"

    @property
    def ip_timezones_file(self) -> Path:
        return self.config_dir / "ip_timezones.csv"


def setting_default(name: str) -> object:
    """The default of one Settings field (for pure code that must not read the environment)."""
    default = Settings.__dataclass_fields__[name].default
    if default is MISSING:
        raise KeyError(f"setting {name!r} has no plain default")
    return default

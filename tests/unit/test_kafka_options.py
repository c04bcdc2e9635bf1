"""Kafka security settings become the kafka.* client options bronze and the simulator's producer use."""

from __future__ import annotations

from dataclasses import replace

import pytest

from spark_jobs.kafka import client_options
from spark_jobs.settings import Settings, SettingsError

pytestmark = pytest.mark.unit

PASSWORD = "pa55-w0rd-never-shown"
PLAIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"


@pytest.fixture
def base(monkeypatch) -> Settings:
    for name in ("SECURITY_PROTOCOL", "SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD", "SSL_TRUSTSTORE_LOCATION",
                 "SSL_TRUSTSTORE_TYPE", "SSL_TRUSTSTORE_PASSWORD", "OPTIONS"):  # fmt: skip
        monkeypatch.delenv(f"INTENTLAKE_KAFKA_{name}", raising=False)
    return replace(Settings.from_env(), kafka_bootstrap="broker-1:9093,broker-2:9093")


def test_plaintext_default_gives_only_the_bootstrap_address(base):
    assert client_options(base) == {"kafka.bootstrap.servers": "broker-1:9093,broker-2:9093"}


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize(
    ("mechanism", "module"), [("PLAIN", PLAIN), ("SCRAM-SHA-256", SCRAM), ("SCRAM-SHA-512", SCRAM)]
)
def test_sasl_gives_mechanism_and_a_jaas_config_with_the_mechanisms_login_module(base, protocol, mechanism, module):
    settings = replace(base, kafka_security_protocol=protocol, kafka_sasl_mechanism=mechanism,
                       kafka_sasl_username="ingest", kafka_sasl_password=PASSWORD)  # fmt: skip
    assert client_options(settings) == {
        "kafka.bootstrap.servers": "broker-1:9093,broker-2:9093",
        "kafka.security.protocol": protocol,
        "kafka.sasl.mechanism": mechanism,
        "kafka.sasl.jaas.config": f'{module} required username="ingest" password="{PASSWORD}";',
    }


def test_quotes_and_backslashes_in_credentials_are_escaped_for_jaas(base):
    settings = replace(base, kafka_security_protocol="SASL_SSL", kafka_sasl_username="svc",
                       kafka_sasl_password='a"b\\c')  # fmt: skip
    assert (
        client_options(settings)["kafka.sasl.jaas.config"] == f'{PLAIN} required username="svc" password="a\\"b\\\\c";'
    )


def test_ssl_without_a_truststore_trusts_the_jvms_certificate_authorities(base):
    assert client_options(replace(base, kafka_security_protocol="SSL")) == {
        "kafka.bootstrap.servers": "broker-1:9093,broker-2:9093",
        "kafka.security.protocol": "SSL",
    }


def test_ssl_with_a_pem_ca_file(base):
    settings = replace(base, kafka_security_protocol="SSL", kafka_ssl_truststore_location="/etc/kafka/ca.pem",
                       kafka_ssl_truststore_type="PEM")  # fmt: skip
    options = client_options(settings)
    assert options["kafka.ssl.truststore.location"] == "/etc/kafka/ca.pem"
    assert options["kafka.ssl.truststore.type"] == "PEM"
    assert "kafka.ssl.truststore.password" not in options and "kafka.sasl.mechanism" not in options


def test_sasl_ssl_with_a_password_protected_truststore(base):
    settings = replace(base, kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                       kafka_sasl_username="ingest", kafka_sasl_password=PASSWORD,
                       kafka_ssl_truststore_location="/etc/kafka/truststore.p12", kafka_ssl_truststore_type="PKCS12",
                       kafka_ssl_truststore_password="changeit")  # fmt: skip
    options = client_options(settings)
    assert options["kafka.security.protocol"] == "SASL_SSL"
    assert options["kafka.sasl.jaas.config"].startswith(SCRAM)
    truststore = {key: value for key, value in options.items() if key.startswith("kafka.ssl.truststore.")}
    assert truststore == {
        "kafka.ssl.truststore.location": "/etc/kafka/truststore.p12",
        "kafka.ssl.truststore.type": "PKCS12",
        "kafka.ssl.truststore.password": "changeit",
    }


def test_passthrough_options_become_kafka_prefixed_options(base, monkeypatch):
    monkeypatch.setenv("INTENTLAKE_KAFKA_OPTIONS",
                       "client.dns.lookup=use_all_dns_ips, kafka.request.timeout.ms=5000,"
                       "ssl.endpoint.identification.algorithm=")  # fmt: skip
    options = client_options(replace(Settings.from_env(), kafka_security_protocol="SSL"))
    assert options["kafka.client.dns.lookup"] == "use_all_dns_ips"
    assert options["kafka.request.timeout.ms"] == "5000"  # a leading kafka. is not doubled
    assert options["kafka.ssl.endpoint.identification.algorithm"] == ""  # empty: hostname checks off


def test_every_security_setting_is_read_from_its_variable(base, monkeypatch):
    for name, value in {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "SCRAM-SHA-256", "SASL_USERNAME": "ingest",
                        "SASL_PASSWORD": PASSWORD, "SSL_TRUSTSTORE_LOCATION": "/etc/kafka/ca.pem",
                        "SSL_TRUSTSTORE_TYPE": "PEM"}.items():  # fmt: skip
        monkeypatch.setenv(f"INTENTLAKE_KAFKA_{name}", value)
    options = client_options(Settings.from_env())
    assert options["kafka.sasl.jaas.config"] == f'{SCRAM} required username="ingest" password="{PASSWORD}";'
    assert options["kafka.ssl.truststore.type"] == "PEM"


def test_secrets_never_appear_in_the_settings_repr(base, monkeypatch):
    monkeypatch.setenv("INTENTLAKE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("INTENTLAKE_KAFKA_SASL_USERNAME", "ingest")
    monkeypatch.setenv("INTENTLAKE_KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("INTENTLAKE_KAFKA_SSL_TRUSTSTORE_LOCATION", "/etc/kafka/truststore.jks")
    monkeypatch.setenv("INTENTLAKE_KAFKA_SSL_TRUSTSTORE_PASSWORD", "truststore-secret")
    monkeypatch.setenv("INTENTLAKE_KAFKA_OPTIONS", "ssl.keystore.password=keystore-secret")
    settings = Settings.from_env()
    assert settings.kafka_sasl_password == PASSWORD
    shown = repr(settings) + str(settings)
    assert "kafka_sasl_username='ingest'" in shown  # the repr still says who connects
    for secret in (PASSWORD, "truststore-secret", "keystore-secret"):
        assert secret not in shown


@pytest.mark.parametrize(("env", "named", "message"), [
    ({"SECURITY_PROTOCOL": "SASL"}, "INTENTLAKE_KAFKA_SECURITY_PROTOCOL", "use one of"),
    ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "GSSAPI", "SASL_USERNAME": "u", "SASL_PASSWORD": PASSWORD},
     "INTENTLAKE_KAFKA_SASL_MECHANISM", "use one of"),
    ({"SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "INTENTLAKE_KAFKA_SASL_USERNAME and INTENTLAKE_KAFKA_SASL_PASSWORD",
     "authenticates with SASL: set"),
    ({"SECURITY_PROTOCOL": "SASL_SSL", "SASL_USERNAME": "u"}, "INTENTLAKE_KAFKA_SASL_PASSWORD", "set"),
    ({"SASL_USERNAME": "u", "SASL_PASSWORD": PASSWORD},
     "INTENTLAKE_KAFKA_SASL_USERNAME and INTENTLAKE_KAFKA_SASL_PASSWORD", "sends no credentials"),
    ({"SSL_TRUSTSTORE_LOCATION": "/etc/kafka/ca.pem"}, "INTENTLAKE_KAFKA_SSL_TRUSTSTORE_LOCATION", "does not use TLS"),
    ({"SECURITY_PROTOCOL": "SSL", "SSL_TRUSTSTORE_TYPE": "CRT"}, "INTENTLAKE_KAFKA_SSL_TRUSTSTORE_TYPE", "use one of"),
    ({"OPTIONS": f"linger.ms=5,ssl.key.password {PASSWORD}"}, "INTENTLAKE_KAFKA_OPTIONS item 2", "not key=value"),
    ({"OPTIONS": f"sasl.jaas.config=x password={PASSWORD}"}, "INTENTLAKE_KAFKA_SASL_USERNAME", "may not set"),
    ({"OPTIONS": "kafka.bootstrap.servers=elsewhere:9092"}, "INTENTLAKE_KAFKA_BOOTSTRAP", "may not set"),
])  # fmt: skip
def test_unusable_security_settings_name_the_variable_and_never_the_password(base, monkeypatch, env, named, message):
    for name, value in env.items():
        monkeypatch.setenv(f"INTENTLAKE_KAFKA_{name}", value)
    with pytest.raises(SettingsError, match=message) as caught:
        Settings.from_env()
    assert named in str(caught.value)
    assert PASSWORD not in str(caught.value)

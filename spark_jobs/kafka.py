"""Kafka as the event stream: bronze reads a topic; the simulator can publish its events to one."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.settings import Settings, parse_kafka_options

# The JAAS login module each SASL mechanism needs (SCRAM-SHA-256 and -512 share one).
LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def _jaas_quoted(text: str) -> str:
    """A JAAS option value in double quotes; backslash and quote escaped as Kafka's JAAS parser reads them."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def client_options(settings: Settings) -> dict[str, str]:
    """Every kafka.* option a Kafka reader or writer needs to reach the broker: address, security, extras.

    PLAINTEXT gives only the bootstrap address (as before). SASL_* adds the mechanism and a JAAS config with
    the login module for it; SSL/SASL_SSL add the truststore when one is set (else the JVM's CAs are
    trusted). INTENTLAKE_KAFKA_OPTIONS adds any other client config. The result holds the SASL password:
    pass it to Spark (which redacts it in plans and logs) and never print it.
    """
    options = {"kafka.bootstrap.servers": settings.kafka_bootstrap}
    protocol = settings.kafka_security_protocol
    if protocol != "PLAINTEXT":
        options["kafka.security.protocol"] = protocol
    if protocol.startswith("SASL_"):
        mechanism = settings.kafka_sasl_mechanism
        options["kafka.sasl.mechanism"] = mechanism
        options["kafka.sasl.jaas.config"] = (
            f"{LOGIN_MODULES[mechanism]} required username={_jaas_quoted(settings.kafka_sasl_username)} "
            f"password={_jaas_quoted(settings.kafka_sasl_password)};"
        )
    if protocol.endswith("SSL") and settings.kafka_ssl_truststore_location:
        options["kafka.ssl.truststore.location"] = settings.kafka_ssl_truststore_location
        options["kafka.ssl.truststore.type"] = settings.kafka_ssl_truststore_type
        if settings.kafka_ssl_truststore_password:
            options["kafka.ssl.truststore.password"] = settings.kafka_ssl_truststore_password
    options.update({f"kafka.{key}": value for key, value in parse_kafka_options(settings.kafka_options).items()})
    return options


def kafka_lines(spark: SparkSession, settings: Settings) -> DataFrame:
    """The topic as a stream of raw lines, each with its topic/partition/offset as its source."""
    return (
        spark.readStream.format("kafka")
        .options(**client_options(settings))
        .option("subscribe", settings.kafka_topic)
        .option("startingOffsets", "earliest")
        .option("failOnDataLoss", "true")
        .option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
        .load()
        .select(
            F.col("value"),  # bytes: the bronze parser decodes and quarantines what is not UTF-8
            F.concat_ws("/", "topic", F.col("partition").cast("string"), F.col("offset").cast("string")).alias(
                "source_file"
            ),
        )
    )


def publish_files(spark: SparkSession, settings: Settings, files: list[Path]) -> int:
    """Publish every line of the given NDJSON files to the topic in file and line order; return the count.

    One file at a time, each in a single task, so records reach the topic in the order they arrived, as
    from a collector (Spark would otherwise write files in parallel, in no particular order).
    """
    count = 0
    for path in files:
        lines = spark.read.text(str(path)).select("value").coalesce(1)
        count += lines.count()
        (lines.write.format("kafka").options(**client_options(settings)).option("topic", settings.kafka_topic).save())
    return count

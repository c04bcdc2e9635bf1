"""Kafka as the event stream: bronze reads a topic; the simulator can publish its events to one."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.settings import Settings


def kafka_lines(spark: SparkSession, settings: Settings) -> DataFrame:
    """The topic as a stream of raw lines, each with its topic/partition/offset as its source."""
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
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
    """Publish every line of the given NDJSON files to the topic, one record per line; return the count."""
    lines = spark.read.text([str(f) for f in files]).select("value")
    count = lines.count()
    (
        lines.write.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
        .option("topic", settings.kafka_topic)
        .save()
    )
    return count

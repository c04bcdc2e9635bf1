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
    """Publish every line of the given NDJSON files to the topic in file and line order; return the count.

    One file at a time, each in a single task, so records reach the topic in the order they arrived, as
    from a collector (Spark would otherwise write files in parallel, in no particular order).
    """
    count = 0
    for path in files:
        lines = spark.read.text(str(path)).select("value").coalesce(1)
        count += lines.count()
        (
            lines.write.format("kafka")
            .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
            .option("topic", settings.kafka_topic)
            .save()
        )
    return count

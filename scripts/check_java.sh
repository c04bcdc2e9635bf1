#!/usr/bin/env bash
# Spark 4.1 runs on Java 17 or 21. Say clearly what is missing instead of failing deep inside Spark.
set -euo pipefail
java_bin="${JAVA_HOME:+$JAVA_HOME/bin/}java"
if ! command -v "$java_bin" >/dev/null 2>&1; then
  echo "intentlake needs Java 17 (or 21) for Spark, and no 'java' was found." >&2
  echo "Install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set JAVA_HOME." >&2
  exit 1
fi
version=$("$java_bin" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
major=${version%%.*}
if [ "$major" != "17" ] && [ "$major" != "21" ]; then
  echo "intentlake needs Java 17 (or 21) for Spark 4.1; found Java '$version' at $(command -v "$java_bin")." >&2
  echo "Point JAVA_HOME at a Java 17 installation and run make again." >&2
  exit 1
fi
echo "java: $version"

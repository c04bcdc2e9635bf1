#!/usr/bin/env bash
# Start or stop a Spark standalone cluster on this machine: a master and N workers, each its own JVM, on
# loopback, from the Spark that ships with the pinned pyspark (no download, no Docker).
#
#   scripts/spark_cluster.sh up      start the master and the workers, wait until every worker registered
#   scripts/spark_cluster.sh down    stop them (SIGTERM, then wait)
#   scripts/spark_cluster.sh status  say whether the master and each worker run
#   scripts/spark_cluster.sh env     print the settings that point intentlake at this cluster
#
# INTENTLAKE_SPARK_CLUSTER_DIR     (default .spark-cluster) logs, pid files and the workers' scratch dirs
# INTENTLAKE_SPARK_CLUSTER_PORT    (default 17077) the master's port; its web UI uses the next one, the
#                                  workers' UIs the ones after that
# INTENTLAKE_SPARK_CLUSTER_WORKERS (default 2) workers, each with
# INTENTLAKE_SPARK_WORKER_CORES    (default 1) cores and
# INTENTLAKE_SPARK_WORKER_MEMORY   (default 2g) memory for its executors
#
# The jobs then run on it with settings only (README "Beyond one machine"):
#   eval "$(scripts/spark_cluster.sh env)"; .venv/bin/intentlake run all
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
dir=${INTENTLAKE_SPARK_CLUSTER_DIR:-$root/.spark-cluster}
port=${INTENTLAKE_SPARK_CLUSTER_PORT:-17077}
workers=${INTENTLAKE_SPARK_CLUSTER_WORKERS:-2}
cores=${INTENTLAKE_SPARK_WORKER_CORES:-1}
memory=${INTENTLAKE_SPARK_WORKER_MEMORY:-2g}
python=${INTENTLAKE_PYTHON:-$root/.venv/bin/python}
master_url=spark://127.0.0.1:$port

spark_home() {
  "$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null || {
    echo "spark-cluster: no pyspark in $python; run make setup first" >&2; return 1
  }
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {  # start <name> <pidfile> <log> <class> <args...>: one daemon JVM in the background
  local name=$1 pidfile=$2 log=$3 class=$4
  shift 4
  if running "$pidfile"; then echo "spark-cluster: $name already running (pid $(cat "$pidfile"))"; return 0; fi
  SPARK_HOME=$home SPARK_LOCAL_IP=127.0.0.1 SPARK_LOG_DIR=$dir PYSPARK_PYTHON=$python \
    nohup "$home/bin/spark-class" "$class" "$@" > "$log" 2>&1 &
  echo $! > "$pidfile"
}

wait_for() {  # wait_for <name> <pidfile> <log> <line>: until the log holds the line, or the JVM died
  local name=$1 pidfile=$2 log=$3 line=$4
  for _ in $(seq 1 240); do
    if grep -q "$line" "$log" 2>/dev/null; then return 0; fi
    if ! running "$pidfile"; then
      echo "spark-cluster: $name exited while starting; last lines of $log:" >&2
      tail -20 "$log" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "spark-cluster: $name did not get ready in 120 s; see $log" >&2
  return 1
}

up() {
  scripts/check_java.sh >/dev/null
  home=$(spark_home)
  mkdir -p "$dir"
  start master "$dir/master.pid" "$dir/master.log" org.apache.spark.deploy.master.Master \
    --host 127.0.0.1 --port "$port" --webui-port $((port + 1))
  wait_for master "$dir/master.pid" "$dir/master.log" "I have been elected leader"
  for n in $(seq 1 "$workers"); do
    mkdir -p "$dir/worker-$n"
    start "worker $n" "$dir/worker-$n.pid" "$dir/worker-$n.log" org.apache.spark.deploy.worker.Worker \
      --host 127.0.0.1 --cores "$cores" --memory "$memory" --work-dir "$dir/worker-$n" \
      --webui-port $((port + 1 + n)) "$master_url"
  done
  for n in $(seq 1 "$workers"); do
    wait_for "worker $n" "$dir/worker-$n.pid" "$dir/worker-$n.log" "Successfully registered with master"
  done
  echo "spark-cluster: master $master_url (pid $(cat "$dir/master.pid")), $workers workers of $cores core(s)" \
    "and $memory each; logs in $dir"
}

stop() {  # stop <name> <pidfile>
  local name=$1 pidfile=$2 pid
  if ! running "$pidfile"; then rm -f "$pidfile"; return 0; fi
  pid=$(cat "$pidfile")
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    if ! kill -0 "$pid" 2>/dev/null; then rm -f "$pidfile"; return 0; fi
    sleep 0.5
  done
  echo "spark-cluster: $name did not stop in 30 s; killing pid $pid" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

down() {
  local pidfile
  for pidfile in "$dir"/worker-*.pid; do
    [ -e "$pidfile" ] || continue
    stop "$(basename "$pidfile" .pid)" "$pidfile"
  done
  stop master "$dir/master.pid"
  echo "spark-cluster: stopped"
}

status() {
  local ok=0 pidfile
  if running "$dir/master.pid"; then echo "master: running (pid $(cat "$dir/master.pid")) at $master_url"
  else echo "master: not running"; ok=1; fi
  for n in $(seq 1 "$workers"); do
    pidfile=$dir/worker-$n.pid
    if running "$pidfile"; then echo "worker $n: running (pid $(cat "$pidfile"))"; else echo "worker $n: not running"; ok=1; fi
  done
  return $ok
}

env_settings() {  # what a shell needs to run intentlake's jobs on this cluster (executors use this venv)
  echo "export INTENTLAKE_SPARK_MASTER=$master_url"
  echo "export INTENTLAKE_SPARK_CONF=spark.pyspark.python=$python,spark.driver.host=127.0.0.1,spark.driver.bindAddress=127.0.0.1"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) env_settings ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac

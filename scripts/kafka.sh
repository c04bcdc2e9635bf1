#!/usr/bin/env bash
# Start or stop a single-node Apache Kafka broker (KRaft mode, loopback only, no Docker).
#
#   scripts/kafka.sh up      resolve the broker jars once (jvm/kafka/pom.xml), format storage, start,
#                            and wait until the broker answers on its port
#   scripts/kafka.sh down    stop it cleanly (SIGTERM, then wait)
#   scripts/kafka.sh status  say whether it runs
#
# INTENTLAKE_KAFKA_DIR (default .kafka) holds its config, data, log and pid file;
# INTENTLAKE_KAFKA_PORT (default 19092) is the client port, the controller uses the next one.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
dir=${INTENTLAKE_KAFKA_DIR:-$root/.kafka}
port=${INTENTLAKE_KAFKA_PORT:-19092}
controller_port=$((port + 1))
libs=$root/.cache/kafka/libs
pidfile=$dir/kafka.pid

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

answers() {  # a TCP connect to the client port succeeds
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

resolve_jars() {
  if [ ! -f "$libs/.resolved" ] || [ "$root/jvm/kafka/pom.xml" -nt "$libs/.resolved" ]; then
    echo "kafka: resolving the broker jars from Maven Central (once) ..."
    rm -rf "$libs"
    mvn -q -B -s "$root/jvm/settings.xml" -f "$root/jvm/kafka/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$libs" -DincludeScope=runtime
    touch "$libs/.resolved"
  fi
}

up() {
  if running; then echo "kafka: already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; return 0; fi
  scripts/check_java.sh >/dev/null
  resolve_jars
  mkdir -p "$dir"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=2
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
PROPS
  cat > "$dir/log4j.properties" <<'PROPS'
log4j.rootLogger=WARN, file
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=${kafka.logs.dir}/server.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
PROPS
  local java_opts=(-Xms256m -Xmx512m -Dkafka.logs.dir="$dir" -Dlog4j.configuration="file:$dir/log4j.properties")
  if [ ! -f "$dir/data/meta.properties" ]; then
    cluster_id=$(java "${java_opts[@]}" -cp "$libs/*" kafka.tools.StorageTool random-uuid)
    java "${java_opts[@]}" -cp "$libs/*" kafka.tools.StorageTool format -t "$cluster_id" \
      -c "$dir/server.properties" >/dev/null
  fi
  nohup java "${java_opts[@]}" -cp "$libs/*" kafka.Kafka "$dir/server.properties" > "$dir/stdout.log" 2>&1 &
  echo $! > "$pidfile"
  for _ in $(seq 1 120); do
    if answers "$port" && grep -q "Kafka Server started" "$dir/server.log" 2>/dev/null; then
      echo "kafka: up on 127.0.0.1:$port (pid $(cat "$pidfile"), data in $dir)"
      return 0
    fi
    if ! running; then
      echo "kafka: the broker exited while starting; last lines of $dir/stdout.log:" >&2
      tail -20 "$dir/stdout.log" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "kafka: no answer on 127.0.0.1:$port after 60 s; see $dir/server.log" >&2
  return 1
}

down() {
  if ! running; then echo "kafka: not running"; rm -f "$pidfile"; return 0; fi
  local pid
  pid=$(cat "$pidfile")
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    if ! kill -0 "$pid" 2>/dev/null; then rm -f "$pidfile"; echo "kafka: stopped"; return 0; fi
    sleep 0.5
  done
  echo "kafka: did not stop in 30 s; killing pid $pid" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if running; then echo "kafka: running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; else echo "kafka: not running"; exit 1; fi ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac

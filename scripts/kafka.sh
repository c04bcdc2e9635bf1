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
#
# Secured listeners, each off unless its port is given (for trying or testing SASL/TLS clients):
# INTENTLAKE_KAFKA_SASL_PORT      a SASL_PLAINTEXT listener (mechanism PLAIN)
# INTENTLAKE_KAFKA_SASL_SSL_PORT  a SASL_SSL listener (PLAIN over TLS) with a self-signed certificate made
#                                 once by keytool; clients trust $dir/tls/ca.pem (truststore type PEM)
# Both accept one user: INTENTLAKE_KAFKA_SASL_USERNAME / INTENTLAKE_KAFKA_SASL_PASSWORD, the same variables
# the clients read. The password is written only to $dir/server.properties (mode 600), never printed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
dir=${INTENTLAKE_KAFKA_DIR:-$root/.kafka}
port=${INTENTLAKE_KAFKA_PORT:-19092}
controller_port=$((port + 1))
sasl_port=${INTENTLAKE_KAFKA_SASL_PORT:-}
sasl_ssl_port=${INTENTLAKE_KAFKA_SASL_SSL_PORT:-}
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

secured_listeners() {  # the extra server.properties lines for the SASL listeners asked for, if any
  [ -n "$sasl_port$sasl_ssl_port" ] || return 0
  local user=${INTENTLAKE_KAFKA_SASL_USERNAME:-} password=${INTENTLAKE_KAFKA_SASL_PASSWORD:-}
  if [[ ! "$user" =~ ^[A-Za-z0-9._-]+$ ]]; then
    echo "kafka: a SASL listener needs INTENTLAKE_KAFKA_SASL_USERNAME (letters, digits, . _ -)" >&2; return 1
  fi
  if [ -z "$password" ] || [[ "$password" == *[\\\"]* ]] || [[ "$password" == *$'\n'* ]]; then
    echo "kafka: a SASL listener needs INTENTLAKE_KAFKA_SASL_PASSWORD (this script takes none with \\, \" or a newline)" >&2
    return 1
  fi
  local jaas="org.apache.kafka.common.security.plain.PlainLoginModule required user_$user=\"$password\";"
  echo "sasl.enabled.mechanisms=PLAIN"
  if [ -n "$sasl_port" ]; then
    echo "listener.name.sasl_plaintext.plain.sasl.jaas.config=$jaas"
  fi
  if [ -n "$sasl_ssl_port" ]; then
    local tls=$dir/tls
    if [ ! -f "$tls/ca.pem" ]; then  # a self-signed certificate for 127.0.0.1, made once
      (umask 077; mkdir -p "$tls"; od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$tls/storepass")
      rm -f "$tls/broker.p12"
      keytool -genkeypair -alias broker -keyalg EC -groupname secp256r1 -validity 3650 -dname "CN=localhost" \
        -ext "SAN=IP:127.0.0.1,DNS:localhost" -storetype PKCS12 -keystore "$tls/broker.p12" \
        -storepass "$(cat "$tls/storepass")" -noprompt >"$tls/keytool.log" 2>&1 &&
      keytool -exportcert -rfc -alias broker -keystore "$tls/broker.p12" -storepass "$(cat "$tls/storepass")" \
        -file "$tls/ca.pem" >>"$tls/keytool.log" 2>&1 ||
        { echo "kafka: keytool could not make the TLS certificate; see $tls/keytool.log" >&2; return 1; }
    fi
    echo "listener.name.sasl_ssl.plain.sasl.jaas.config=$jaas"
    echo "listener.name.sasl_ssl.ssl.keystore.location=$tls/broker.p12"
    echo "listener.name.sasl_ssl.ssl.keystore.type=PKCS12"
    echo "listener.name.sasl_ssl.ssl.keystore.password=$(cat "$tls/storepass")"
  fi
}

up() {
  if running; then echo "kafka: already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; return 0; fi
  scripts/check_java.sh >/dev/null
  resolve_jars
  mkdir -p "$dir"
  local listeners=PLAINTEXT://127.0.0.1:$port  # also the advertised ones
  [ -z "$sasl_port" ] || listeners+=,SASL_PLAINTEXT://127.0.0.1:$sasl_port
  [ -z "$sasl_ssl_port" ] || listeners+=,SASL_SSL://127.0.0.1:$sasl_ssl_port
  local secured
  secured=$(secured_listeners) || return 1
  (umask 077; : > "$dir/server.properties")  # it may hold the SASL password: only its owner reads it
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=$listeners,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=$listeners
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=2
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
PROPS
  [ -z "$secured" ] || printf '%s\n' "$secured" >> "$dir/server.properties"
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
      echo "kafka: up on $listeners (pid $(cat "$pidfile"), data in $dir)"
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

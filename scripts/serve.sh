#!/usr/bin/env bash
# `make serve`: everything the live side needs, on loopback, until Ctrl-C stops it all.
#
#   - Redis for the online store (scripts/redis.sh; INTENTLAKE_REDIS_URL is set for the others unless given)
#   - the collector (`intentlake serve collector`, INTENTLAKE_COLLECTOR_PORT, default 8701)
#   - the decision API (`intentlake serve api`, INTENTLAKE_API_PORT, default 8700)
#   - the streaming jobs that feed them (`intentlake run all --trigger`: bronze, silver, user features, gold and
#     the online store in cycles, one at most every INTENTLAKE_TRIGGER, default 5 seconds)
#
# If one of them stops on its own, the others are stopped too and the script exits non-zero.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin/intentlake
scripts/redis.sh up || exit 1
export INTENTLAKE_REDIS_URL=${INTENTLAKE_REDIS_URL:-redis://127.0.0.1:${INTENTLAKE_REDIS_PORT:-16379}/0}
trigger=${INTENTLAKE_TRIGGER:-5 seconds}
[ "$trigger" = availableNow ] && trigger="5 seconds"
lakehouse=${INTENTLAKE_LAKEHOUSE:-./lakehouse}

pids=()
stopping=0
stop() {  # $1: the signal that asked (INT from a terminal's Ctrl-C has reached the children already)
  [ "$stopping" = 1 ] && return
  stopping=1
  echo "serve: stopping the collector, the decision API and the streaming jobs ..."
  if [ "${1:-TERM}" = INT ]; then
    for _ in $(seq 1 600); do  # each finishes what it is doing (a pipeline step may take a while)
      alive=0
      for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
      [ "$alive" = 0 ] && break
      sleep 0.1
    done
  fi
  kill -TERM "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null
  scripts/redis.sh down
}
trap 'stop INT; exit 0' INT
trap 'stop TERM; exit 0' TERM

"$bin" serve collector & pids+=($!)
"$bin" serve api & pids+=($!)
"$bin" run all --trigger "$trigger" & pids+=($!)
cat <<EOF
serve: running (Ctrl-C stops everything)
  collector     http://127.0.0.1:${INTENTLAKE_COLLECTOR_PORT:-8701}/v1/track   write key: ${lakehouse}/_secrets/write_key (or INTENTLAKE_COLLECTOR_WRITE_KEYS)
  decision API  http://127.0.0.1:${INTENTLAKE_API_PORT:-8700}/api/personalize  API key: ${lakehouse}/_secrets/api_key (or INTENTLAKE_API_KEYS); docs at /docs
  online store  ${INTENTLAKE_REDIS_URL}
  pipeline      bronze -> silver -> gold -> online store, a cycle at most every ${trigger}
EOF
wait -n "${pids[@]}"
status=$?
if [ "$stopping" = 0 ]; then
  echo "serve: a process stopped on its own (exit $status); stopping the others" >&2
  stop
  exit 1
fi

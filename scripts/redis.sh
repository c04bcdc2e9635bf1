#!/usr/bin/env bash
# Start or stop a local Redis server (loopback only, no Docker) for the online store.
#
#   scripts/redis.sh up      find redis-server (on PATH, or fetched once from Debian's packages into
#                            .cache/redis), start it, and wait until it answers PING
#   scripts/redis.sh down    stop it (SHUTDOWN NOSAVE, then wait for the process to go)
#   scripts/redis.sh status  say whether it runs
#   scripts/redis.sh path    print the redis-server it would run (fetching it if needed)
#
# INTENTLAKE_REDIS_DIR (default .redis) holds its log and pid file; INTENTLAKE_REDIS_PORT (default 16379) is
# its port. Nothing is persisted: the online store is rebuilt from gold when it finds itself empty
# (spark_jobs/serving/online_store.py), so a restarted server needs no dump file.
#
# Without redis-server on PATH the script downloads the Debian packages that hold it (redis-tools and the
# two libraries it links that a slim system lacks) with `apt-get download` and unpacks them with `dpkg -x`
# under .cache/redis: no root, no service, nothing installed system-wide.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
dir=${INTENTLAKE_REDIS_DIR:-$root/.redis}
port=${INTENTLAKE_REDIS_PORT:-16379}
cache=$root/.cache/redis
pidfile=$dir/redis.pid

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

answers() {  # PING over a plain TCP connection gets +PONG
  local reply
  reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'PING\r\n' >&3 && timeout 1 head -c 7 <&3) 2>/dev/null) || return 1
  [[ "$reply" == "+PONG"* ]]
}

server_path() {  # the redis-server to run; fetched once from Debian's packages if none is on PATH
  if command -v redis-server >/dev/null 2>&1; then
    command -v redis-server
    return
  fi
  local unpacked=$cache/root/usr/bin/redis-server
  if [ ! -x "$unpacked" ]; then
    mkdir -p "$cache/debs"
    (
      flock 9  # two test workers may ask at once
      if [ ! -x "$unpacked" ]; then
        echo "redis: fetching redis-server from Debian's packages (once) ..." >&2
        cd "$cache/debs"
        packages=(redis-tools libjemalloc2 liblzf1)
        if ! apt-get download "${packages[@]}" >/dev/null 2>&1; then
          # an image without package lists: fetch them (as root), then try again
          if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; fi
          apt-get download "${packages[@]}" >/dev/null 2>&1 || {
            echo "redis: no redis-server on PATH and 'apt-get download ${packages[*]}' failed;" \
                 "install redis-server (or valkey-server) or put one on PATH" >&2
            exit 1
          }
        fi
        for deb in ./*.deb; do dpkg -x "$deb" "$cache/root"; done
        # Debian's redis-server is the redis-check-rdb binary under another name (it looks at argv[0])
        ln -sf redis-check-rdb "$cache/root/usr/bin/redis-server"
        ln -sf redis-check-rdb "$cache/root/usr/bin/redis-check-aof"
      fi
    ) 9>"$cache.lock"
  fi
  echo "$unpacked"
}

with_libs() {  # run a binary unpacked under .cache/redis with the libraries unpacked beside it
  local libs
  libs=$(find "$cache/root/usr/lib" -maxdepth 1 -mindepth 1 -type d 2>/dev/null | tr '\n' ':')
  LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:-}" "$@"
}

case "${1:-}" in
  up)
    if running && answers; then
      echo "redis: already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"
      exit 0
    fi
    server=$(server_path)
    mkdir -p "$dir"
    with_libs "$server" --port "$port" --bind 127.0.0.1 --protected-mode yes --daemonize yes \
      --pidfile "$pidfile" --logfile "$dir/redis.log" --dir "$dir" --save "" --appendonly no
    for _ in $(seq 1 100); do
      if answers; then
        echo "redis: up on 127.0.0.1:$port (INTENTLAKE_REDIS_URL=redis://127.0.0.1:$port/0); log $dir/redis.log"
        exit 0
      fi
      sleep 0.1
    done
    echo "redis: did not answer on 127.0.0.1:$port within 10 s; see $dir/redis.log" >&2
    tail -20 "$dir/redis.log" >&2 || true
    exit 1
    ;;
  down)
    if ! running; then
      echo "redis: not running"
      rm -f "$pidfile"
      exit 0
    fi
    pid=$(cat "$pidfile")
    (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'SHUTDOWN NOSAVE\r\n' >&3) 2>/dev/null || kill "$pid"
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; echo "redis: stopped"; exit 0; }
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    echo "redis: killed (did not stop within 10 s)"
    ;;
  status)
    if running && answers; then echo "redis: running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; else echo "redis: not running"; exit 1; fi
    ;;
  path)
    server_path
    ;;
  *)
    echo "usage: scripts/redis.sh up|down|status|path" >&2
    exit 2
    ;;
esac

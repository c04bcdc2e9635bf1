#!/usr/bin/env bash
# `make airflow`: Airflow 3.3 (`airflow standalone`: scheduler, DAG processor, triggerer and API server with
# the UI) on loopback, with this repo's dags/ and the lakehouse in ./lakehouse (INTENTLAKE_* as set).
# State (sqlite metadata database, logs, the generated admin password) lives in .airflow/.
#
# AIRFLOW_PORT (default 8080) is the one port to choose: the UI and REST API listen on it, tasks reach the
# execution API through it (`[core] execution_api_server_url`), links and login redirects use it
# (`[api] base_url`), and the task and triggerer log servers take the next two ports (AIRFLOW_PORT+1, +2;
# Airflow's own defaults 8793/8794 would collide with a second instance or with AIRFLOW_PORT=8793).
# AIRFLOW_HOST (default 127.0.0.1) is the address the API server binds.
#
#   scripts/airflow.sh                 start Airflow in the foreground (Ctrl-C stops it)
#   scripts/airflow.sh --print-config  print the Airflow settings it would use, one NAME=value a line, and exit
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

host="${AIRFLOW_HOST:-127.0.0.1}"
port="${AIRFLOW_PORT:-8080}"
if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65533)); then
  echo "AIRFLOW_PORT=$port is not a port: use a number from 1 to 65533 (the next two ports serve task logs)" >&2
  exit 2
fi
# Tasks are clients of the API server: a wildcard bind address is not one they can connect to.
case "$host" in
  0.0.0.0 | "::" | "[::]") client_host=127.0.0.1 ;;
  *:*) client_host="[$host]" ;;  # an IPv6 literal inside a URL
  *) client_host="$host" ;;
esac

export PATH="$repo/.venv/bin:$PATH"  # standalone starts its components as `airflow ...`
export AIRFLOW_HOME="${AIRFLOW_HOME:-$repo/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$repo/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__API__HOST="$host"
export AIRFLOW__API__PORT="$port"
export AIRFLOW__API__BASE_URL="http://$client_host:$port/"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://$client_host:$port/execution/"
export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=$((port + 1))
export AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=$((port + 2))
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$AIRFLOW_HOME/passwords.json"
export INTENTLAKE_LAKEHOUSE="${INTENTLAKE_LAKEHOUSE:-$repo/lakehouse}"

if [[ "${1:-}" == "--print-config" ]]; then
  echo "AIRFLOW_HOME=$AIRFLOW_HOME"
  env | grep '^AIRFLOW__' | sort
  echo "INTENTLAKE_LAKEHOUSE=$INTENTLAKE_LAKEHOUSE"
  exit 0
elif [[ $# -gt 0 ]]; then
  echo "usage: scripts/airflow.sh [--print-config]" >&2
  exit 2
fi

# Fail now, with the port's name, rather than let one component die later among standalone's output.
for p in "$port" "$AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT" "$AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is already in use (another Airflow?): choose a free AIRFLOW_PORT, e.g. AIRFLOW_PORT=8090 make airflow" >&2
    echo "(Airflow uses AIRFLOW_PORT, AIRFLOW_PORT+1 and AIRFLOW_PORT+2)" >&2
    exit 1
  fi
done

mkdir -p "$AIRFLOW_HOME"
"$repo/.venv/bin/airflow" db migrate >/dev/null
cat <<MSG
Airflow UI:  $AIRFLOW__API__BASE_URL
Login:       admin, password in $AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE (written on first start)
DAGs:        $AIRFLOW__CORE__DAGS_FOLDER   lakehouse: $INTENTLAKE_LAKEHOUSE
Stop with Ctrl-C.
MSG
exec "$repo/.venv/bin/airflow" standalone

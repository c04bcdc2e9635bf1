#!/usr/bin/env bash
# `make airflow`: Airflow 3.3 (`airflow standalone`: scheduler, DAG processor, triggerer and API server with
# the UI) on loopback, with this repo's dags/ and the lakehouse in ./lakehouse (INTENTLAKE_* as set).
# State (sqlite metadata database, logs, the generated admin password) lives in .airflow/.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
export PATH="$repo/.venv/bin:$PATH"  # standalone starts its components as `airflow ...`
export AIRFLOW_HOME="${AIRFLOW_HOME:-$repo/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$repo/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__API__HOST="${AIRFLOW_HOST:-127.0.0.1}"
export AIRFLOW__API__PORT="${AIRFLOW_PORT:-8080}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$AIRFLOW_HOME/passwords.json"
export INTENTLAKE_LAKEHOUSE="${INTENTLAKE_LAKEHOUSE:-$repo/lakehouse}"
mkdir -p "$AIRFLOW_HOME"
"$repo/.venv/bin/airflow" db migrate >/dev/null
cat <<MSG
Airflow UI:  http://$AIRFLOW__API__HOST:$AIRFLOW__API__PORT
Login:       admin, password in $AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE (written on first start)
DAGs:        $AIRFLOW__CORE__DAGS_FOLDER   lakehouse: $INTENTLAKE_LAKEHOUSE
Stop with Ctrl-C.
MSG
exec "$repo/.venv/bin/airflow" standalone

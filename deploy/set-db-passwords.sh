#!/usr/bin/env bash
# Give the database roles collector, trading_bot and grafana_reader the passwords their services
# use, read from the services' env files (one copy of each password). Run as root after
# `ig-collector migrate` (which creates the roles without passwords), and again whenever you
# change a password in those files.
#
#   deploy/set-db-passwords.sh [ENV_DIR]        ENV_DIR defaults to /etc/ig-collector
#
# ENV_DIR holds ig-collector.env, trading-bot.env and grafana.env (see the *.example files).
# Nothing secret is echoed: psql reads SCRAM-SHA-256 verifiers on stdin, never a password, and
# statement logging is off for the session.
# IGFX_PSQL is the psql command to pipe into (default: as the postgres OS user over the local
# socket); compose's migrate service points it at the timescaledb container.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
env_dir=${1:-/etc/ig-collector}
psql_cmd=${IGFX_PSQL:-runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d postgres}

# Build the SQL first: a refused password (placeholder, wrong role in a URL) stops before psql runs.
sql=$(python3 "$here/db_passwords.py" "$env_dir")
printf '%s\n' "$sql" | sh -c "$psql_cmd" >/dev/null
echo "set-db-passwords: passwords set for collector, trading_bot and grafana_reader" >&2

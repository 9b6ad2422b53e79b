#!/usr/bin/env bash
# The dev cluster script for a checkout (Makefile, .ci/run): the logic lives in
# collector/devdb.sh, shipped in the package so an installed collector has it too. Here the
# cluster goes to the checkout's .devdb/ unless DEVDB_DIR says otherwise.
#
#   deploy/devdb.sh install|start|stop|url   (see collector/devdb.sh)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export DEVDB_DIR=${DEVDB_DIR:-$ROOT/.devdb} DEVDB_SELF=${DEVDB_SELF:-$0}
exec bash "$ROOT/collector/devdb.sh" "$@"

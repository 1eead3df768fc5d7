#!/usr/bin/env bash
# Runs every test of storage-tracker on real parts: installs what is missing, starts a private
# ClickHouse and Slurm on 127.0.0.1 under .work/test, then format, lint, unit and integration
# tests. A part that cannot be started fails the run; nothing is skipped.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
work="$repo/.work/test"
mkdir -p "$work"

step() { printf '\n== %s\n' "$*"; }
started=$(date +%s)

step "system packages"
bash ci/install-deps.sh

step "local ClickHouse and Slurm"
export STORAGE_TRACKER_TEST_CLICKHOUSE_URL
STORAGE_TRACKER_TEST_CLICKHOUSE_URL=$(bash ci/clickhouse.sh start "$work")
export SLURM_CONF
SLURM_CONF=$(bash ci/slurm.sh start "$work")
cleanup() {
  bash ci/slurm.sh stop "$work" || true
  bash ci/clickhouse.sh stop "$work" || true
}
trap cleanup EXIT
echo "ClickHouse: $STORAGE_TRACKER_TEST_CLICKHOUSE_URL ($(curl -fsS "$STORAGE_TRACKER_TEST_CLICKHOUSE_URL/" --data-binary 'SELECT version()'))"
echo "Slurm: $SLURM_CONF ($(sinfo -h -o '%D nodes %T' | head -1))"

step "format"
cargo fmt --all --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
set +e
cargo test --workspace --locked 2>&1 | tee "$work/cargo-test.log"
status=${PIPESTATUS[0]}
set -e

echo
echo "ci/test.sh: $(( $(date +%s) - started )) s"
awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$work/cargo-test.log"
exit "$status"

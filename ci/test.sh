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
# Two Slurm "nodes" on this host, so that batch jobs span more than one.
SLURM_CONF=$(STORAGE_TRACKER_SLURM_NODES=2 bash ci/slurm.sh start "$work")
# A cluster of two more servers, each a shard of cluster st_test, for the cluster store.
# (The cluster tests stop and restart a shard: its work directory is in _SHARD_DIRS.)
export STORAGE_TRACKER_TEST_CLICKHOUSE_SHARDS= STORAGE_TRACKER_TEST_CLICKHOUSE_SHARD_DIRS=
for shard in 1 2; do
  url=$(STORAGE_TRACKER_CH_CLUSTER="st_test=127.0.0.1:19001,127.0.0.1:19002" \
    STORAGE_TRACKER_CH_HTTP_PORT=$((18124 + shard)) STORAGE_TRACKER_CH_TCP_PORT=$((19000 + shard)) \
    bash ci/clickhouse.sh start "$work/shard$shard")
  STORAGE_TRACKER_TEST_CLICKHOUSE_SHARDS+="${STORAGE_TRACKER_TEST_CLICKHOUSE_SHARDS:+,}$url"
  STORAGE_TRACKER_TEST_CLICKHOUSE_SHARD_DIRS+="${STORAGE_TRACKER_TEST_CLICKHOUSE_SHARD_DIRS:+,}$work/shard$shard"
done
cleanup() {
  bash ci/slurm.sh stop "$work" || true
  bash ci/clickhouse.sh stop "$work" || true
  for shard in 1 2; do bash ci/clickhouse.sh stop "$work/shard$shard" || true; done
}
trap cleanup EXIT
echo "ClickHouse: $STORAGE_TRACKER_TEST_CLICKHOUSE_URL ($(curl -fsS "$STORAGE_TRACKER_TEST_CLICKHOUSE_URL/" --data-binary 'SELECT version()'))"
echo "ClickHouse cluster st_test: $STORAGE_TRACKER_TEST_CLICKHOUSE_SHARDS"
echo "Slurm: $SLURM_CONF ($(sinfo -h -o '%D nodes %T' | head -1))"

step "format"
cargo fmt --all --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
# No import cycles between a crate's modules; the API's SQL only in its query modules.
python3 ci/shape.py

step "tests"
# Integration tests run the binaries of other packages too (storage-aggregator, storage-api).
cargo build --workspace --bins --locked
# storage-scan once more against Open MPI (srun --mpi=pmix), in a target directory of its own.
MPICC=mpicc.openmpi cargo build --locked -p storage-tracker-scanner --bin storage-scan --target-dir target/openmpi
export STORAGE_TRACKER_OPENMPI_SCANNER="$repo/target/openmpi/debug/storage-scan"
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$work/cargo-test.log"
status=${PIPESTATUS[0]}
set -e

# The integration tests run again through a recording proxy; every statement they sent to
# 18.16 is replayed on a current ClickHouse engine (chDB) and every result compared.
step "portable SQL: statements replayed on a modern ClickHouse (chDB)"
conformance_port=${STORAGE_TRACKER_CONFORMANCE_PORT:-18124}
rm -f "$work/statements.jsonl"
python3 ci/conformance.py proxy --listen "$conformance_port" \
  --upstream "$STORAGE_TRACKER_TEST_CLICKHOUSE_URL" --log "$work/statements.jsonl" &
proxy=$!
trap 'kill $proxy 2>/dev/null || true; cleanup' EXIT
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$conformance_port/ping" >/dev/null 2>&1 && break; sleep 0.1; done
set +e
(
  export STORAGE_TRACKER_TEST_CLICKHOUSE_URL="http://127.0.0.1:$conformance_port"
  cargo test --locked -p storage-tracker-tests --test ingest --test end_to_end --test import --test history --test reports_api --test console --test duplicates --test prometheus
) >"$work/conformance-tests.log" 2>&1
recorded=$?
kill $proxy 2>/dev/null
python3 ci/conformance.py replay --log "$work/statements.jsonl"
replayed=$?
set -e
if [ $recorded -ne 0 ]; then
  echo "the integration tests failed through the recording proxy; see $work/conformance-tests.log"
fi
[ $recorded -eq 0 ] && [ $replayed -eq 0 ] || status=1

# The web UI: type check and build, then browser tests (Debian's Chromium driven by
# playwright-core) against storage-api, storage-aggregator and the test ClickHouse.
step "web UI: build and browser tests"
set +e
(
  cd ui &&
    npm run --silent build &&
    STORAGE_TRACKER_BIN_DIR="$repo/target/debug" STORAGE_TRACKER_SCREENSHOTS="$work/screenshots" \
      node --test --test-reporter=tap tests/ui.test.mjs
) 2>&1 | tee "$work/ui-test.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
set -e
echo "screenshots: $work/screenshots"

echo
echo "ci/test.sh: $(( $(date +%s) - started )) s"
awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     FILENAME ~ /ui-test/ && /^# pass / { p += $3 }
     FILENAME ~ /ui-test/ && /^# fail / { f += $3 }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$work/cargo-test.log" "$work/ui-test.log"
exit "$status"

#!/usr/bin/env bash
# The main job on one machine: install what is missing, build, scan DIRECTORY into a local
# ClickHouse, and serve the API and web UI on 127.0.0.1.
#
#   ci/scan-and-serve.sh DIRECTORY [LABEL]
#
# Environment: STORAGE_TRACKER_API_LISTEN (127.0.0.1:8080), STORAGE_TRACKER_RANKS (1: the scan
# runs as one process; N > 1 runs N MPI ranks with mpiexec.mpich).
# ClickHouse keeps its data under .work/clickhouse; `ci/clickhouse.sh stop` stops it afterwards.
set -euo pipefail

dir=${1:?usage: ci/scan-and-serve.sh DIRECTORY [LABEL]}
[ -d "$dir" ] || { echo "not a directory: $dir" >&2; exit 2; }
label=${2:-$(basename "$(realpath "$dir")")}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
work="$repo/.work"
mkdir -p "$work"
listen=${STORAGE_TRACKER_API_LISTEN:-127.0.0.1:8080}
ranks=${STORAGE_TRACKER_RANKS:-1}

bash ci/install-deps.sh
cargo build --release --locked --bins
bin="$repo/target/release"
(cd ui && npm run --silent build)

export STORAGE_TRACKER_CLICKHOUSE_URL
STORAGE_TRACKER_CLICKHOUSE_URL=$(bash ci/clickhouse.sh start)
export STORAGE_TRACKER_DATABASE=${STORAGE_TRACKER_DATABASE:-storage_tracker}
grpc_port=${STORAGE_TRACKER_GRPC_PORT:-50051}

"$bin/storage-aggregator" serve --listen "127.0.0.1:$grpc_port" --spool "$work/spool" \
  >"$work/aggregator.log" 2>&1 &
aggregator=$!
trap 'kill $aggregator 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$grpc_port") 2>/dev/null && break
  kill -0 "$aggregator" 2>/dev/null || { cat "$work/aggregator.log" >&2; exit 1; }
  sleep 0.1
done

echo "scanning $dir ($ranks rank(s))"
scan=("$bin/storage-scan" --aggregator "http://127.0.0.1:$grpc_port" --label "$label" "$dir")
status=0
if [ "$ranks" -gt 1 ]; then
  mpiexec.mpich -n "$ranks" "${scan[@]}" || status=$?
else
  "${scan[@]}" || status=$?
fi
# 3: committed, but some entries could not be read (recorded as errors).
if [ "$status" -ne 0 ] && [ "$status" -ne 3 ]; then
  echo "the scan failed (exit $status); the aggregator's log is $work/aggregator.log" >&2
  exit "$status"
fi
kill "$aggregator" 2>/dev/null || true
wait "$aggregator" 2>/dev/null || true
trap - EXIT

echo
echo "storage-tracker is serving on http://$listen/  (Ctrl-C stops it; ci/clickhouse.sh stop stops ClickHouse)"
exec "$bin/storage-api" --listen "$listen" --ui-dir "$repo/ui/dist"

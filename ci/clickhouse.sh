#!/usr/bin/env bash
# A private ClickHouse server for development and tests, on 127.0.0.1 only, with every file
# under one work directory.
#
#   ci/clickhouse.sh start [WORKDIR]   start (or reuse) the server; prints its HTTP URL
#   ci/clickhouse.sh stop  [WORKDIR]   stop it
#   ci/clickhouse.sh restart WORKDIR   stop it and start it again as it was configured
#
# Users: "default" (loopback only) writes; "storage_reader" is read-only with execution limits,
# for the API. Ports: STORAGE_TRACKER_CH_HTTP_PORT (18123), _TCP_PORT (19000).
#
# STORAGE_TRACKER_CH_CLUSTER="NAME=HOST:TCP_PORT,HOST:TCP_PORT,..." defines a cluster in
# remote_servers with one shard per server (no replicas), as the aggregator's cluster mode
# reads it (deploy/README.md, "A ClickHouse cluster"): start each of its servers with the same
# value, each in a work directory and on ports of its own.
set -euo pipefail

cmd=${1:?usage: ci/clickhouse.sh start|stop [WORKDIR]}
here=$(cd "$(dirname "$0")" && pwd)
work=${2:-${STORAGE_TRACKER_WORK:-$here/../.work}}/clickhouse
http_port=${STORAGE_TRACKER_CH_HTTP_PORT:-18123}
tcp_port=${STORAGE_TRACKER_CH_TCP_PORT:-19000}
url="http://127.0.0.1:$http_port"

ping() { curl -fsS --max-time 2 "$url/ping" >/dev/null 2>&1; }

stop() {
  if [ -f "$work/server.pid" ]; then
    local pid
    pid=$(cat "$work/server.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$work/server.pid"
  fi
}

case "$cmd" in
stop) stop; exit 0 ;;
start|restart) ;;
*) echo "usage: ci/clickhouse.sh start|stop|restart [WORKDIR]" >&2; exit 2 ;;
esac

if [ "$cmd" = restart ]; then
  [ -f "$work/config.xml" ] || { echo "no server was configured in $work" >&2; exit 1; }
  stop
  http_port=$(sed -n 's|.*<http_port>\([0-9]*\)</http_port>.*|\1|p' "$work/config.xml")
  url="http://127.0.0.1:$http_port"
elif ping; then
  echo "$url"
  exit 0
fi
command -v clickhouse-server >/dev/null || { echo "clickhouse-server is not installed: run ci/install-deps.sh" >&2; exit 1; }
stop
mkdir -p "$work"/{data,tmp,user_files,format_schemas,log}
work=$(cd "$work" && pwd)
if [ "$cmd" = start ]; then
remote_servers=
if [ -n "${STORAGE_TRACKER_CH_CLUSTER:-}" ]; then
  cluster=${STORAGE_TRACKER_CH_CLUSTER%%=*}
  shards=
  IFS=, read -ra servers <<<"${STORAGE_TRACKER_CH_CLUSTER#*=}"
  for server in "${servers[@]}"; do
    shards+="<shard><replica><host>${server%:*}</host><port>${server##*:}</port></replica></shard>"
  done
  remote_servers="<remote_servers><$cluster>$shards</$cluster></remote_servers>"
fi
cat >"$work/config.xml" <<XML
<yandex>
    <logger>
        <level>warning</level>
        <log>$work/log/server.log</log>
        <errorlog>$work/log/server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$http_port</http_port>
    <tcp_port>$tcp_port</tcp_port>
    <interserver_http_port>$((tcp_port + 9))</interserver_http_port>
    <path>$work/data/</path>
    <tmp_path>$work/tmp/</tmp_path>
    <user_files_path>$work/user_files/</user_files_path>
    <format_schema_path>$work/format_schemas/</format_schema_path>
    <users_config>$work/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mlock_executable>false</mlock_executable>
    $remote_servers
    <!-- Parts of 64 MB and more compressed with zstd, not lz4: 25 bytes per entry of a project
         tree, not 34 (deploy/README.md, "Disk"). Inserted parts and the first merges keep lz4,
         cheaper to write. Reading zstd costs a little more CPU. -->
    <compression>
        <case>
            <min_part_size>64000000</min_part_size>
            <min_part_size_ratio>0</min_part_size_ratio>
            <method>zstd</method>
            <level>3</level>
        </case>
    </compression>
</yandex>
XML
cat >"$work/users.xml" <<XML
<yandex>
    <profiles>
        <default>
            <max_memory_usage>8000000000</max_memory_usage>
        </default>
        <!-- The API's profile: reads only, bounded in time and result size. -->
        <readonly_api>
            <readonly>1</readonly>
            <max_execution_time>30</max_execution_time>
            <max_result_rows>1000000</max_result_rows>
            <result_overflow_mode>throw</result_overflow_mode>
            <max_memory_usage>4000000000</max_memory_usage>
            <!-- On a cluster, a subquery over a distributed table runs once, on the server
                 asked, and its result goes to the shards (a read-only user cannot set it
                 per query). -->
            <distributed_product_mode>global</distributed_product_mode>
        </readonly_api>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <storage_reader>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>readonly_api</profile>
            <quota>default</quota>
        </storage_reader>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
    </interval></default></quotas>
</yandex>
XML
fi
# A background job of a script ignores SIGINT: Ctrl-C in a caller does not stop the server.
cd "$work"
clickhouse-server --config-file="$work/config.xml" >"$work/log/stdout.log" 2>&1 </dev/null &
echo $! >"$work/server.pid"
cd - >/dev/null
for _ in $(seq 1 300); do
  if ping; then
    echo "$url"
    exit 0
  fi
  kill -0 "$(cat "$work/server.pid")" 2>/dev/null || break
  sleep 0.1
done
echo "ClickHouse did not start; see $work/log/" >&2
tail -20 "$work/log/server.err.log" "$work/log/stdout.log" >&2 2>/dev/null || true
exit 1

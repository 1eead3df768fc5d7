#!/usr/bin/env bash
# A private ClickHouse server for development and tests, on 127.0.0.1 only, with every file
# under one work directory.
#
#   ci/clickhouse.sh start [WORKDIR]   start (or reuse) the server; prints its HTTP URL
#   ci/clickhouse.sh stop  [WORKDIR]   stop it
#
# Users: "default" (loopback only) writes; "storage_reader" is read-only with execution limits,
# for the API. Ports: STORAGE_TRACKER_CH_HTTP_PORT (18123), _TCP_PORT (19000).
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
start) ;;
*) echo "usage: ci/clickhouse.sh start|stop [WORKDIR]" >&2; exit 2 ;;
esac

if ping; then
  echo "$url"
  exit 0
fi
command -v clickhouse-server >/dev/null || { echo "clickhouse-server is not installed: run ci/install-deps.sh" >&2; exit 1; }
stop
mkdir -p "$work"/{data,tmp,user_files,format_schemas,log}
work=$(cd "$work" && pwd)
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
    <!-- Parts compressed with zstd, not lz4: 25 bytes per entry of a project tree, not 34
         (deploy/README.md, "Disk"). Reading costs a little more CPU. -->
    <compression>
        <case>
            <min_part_size>0</min_part_size>
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

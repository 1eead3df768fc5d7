#!/usr/bin/env python3
"""The store at scale: two weekly snapshots of a synthetic project filesystem, imported,
committed and queried, with what each step cost.

  store_scale.py --entries N --work DIR --clickhouse-url URL [--out FILE] [--bin DIR]
                 [--cluster NAME --shard URL --shard URL ...]

Writes both snapshots with st-gen-chunks (the second a week later: removals, growth, new runs,
files written and read), imports each with `storage-aggregator import` into a fresh database
and measures: wall time and entries/s of import and of commit, CPU seconds per million entries
of the aggregator and of ClickHouse, peak RSS of each (ClickHouse's peak is reset before each
import through /proc/PID/clear_refs), and bytes per entry on disk per table (as committed, and
after a final merge). Then serves the database with storage-api as the read-only user and runs
api_latency.py against the second snapshot. Prints a Markdown section, appended to --out.

ClickHouse must run on this machine (its process is found by the URL's port) so that its
memory and CPU can be read. With --cluster, the database lives on the shards of that cluster
(the aggregator's cluster mode, --clickhouse-url one of them): every shard's server runs here,
its CPU and peak RSS are summed, and the bytes are those of the shards' local tables.
"""
import argparse
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def ch(url, sql):
    request = urllib.request.Request(url, data=sql.encode())
    with urllib.request.urlopen(request, timeout=3600) as response:
        return response.read().decode()


def clickhouse_pid(url):
    """The clickhouse-server process listening on the URL's port."""
    port = urllib.parse.urlsplit(url).port or 8123
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    m = re.search(r"pid=(\d+)", out)
    if not m:
        sys.exit(f"store_scale: no process listens on port {port}; start ClickHouse on this machine")
    return int(m.group(1))


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_mib(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib(pid):
    return status_mib(pid, "VmHWM")


def rss_mib(pid):
    return status_mib(pid, "VmRSS")


def timed(cmd, env=None):
    """Runs cmd under /usr/bin/time -v: (wall seconds, peak RSS MiB, CPU seconds, stdout)."""
    start = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f"store_scale: {' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    stats = dict(re.findall(r"^\s*([^:\n]+): (.+)$", p.stderr, re.M))
    rss = int(stats["Maximum resident set size (kbytes)"]) / 1024
    cpu = float(stats["User time (seconds)"]) + float(stats["System time (seconds)"])
    return wall, rss, cpu, p.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def table_bytes(urls, db):
    """Bytes on disk per table of db, summed over the servers at urls."""
    total = {}
    for url in urls:
        out = ch(url, f"SELECT table, sum(bytes_on_disk) FROM system.parts WHERE database = '{db}' AND active "
                      "GROUP BY table ORDER BY table FORMAT TSV")
        for t, b in (line.split("\t") for line in out.splitlines()):
            total[t] = total.get(t, 0) + int(b)
    return total


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, required=True)
    p.add_argument("--work", required=True, help="directory for the chunk files (2 x about 40 bytes per entry)")
    p.add_argument("--clickhouse-url", required=True)
    p.add_argument("--database", default="store_scale")
    p.add_argument("--reader", default="storage_reader", help="the read-only ClickHouse user the API uses")
    p.add_argument("--bin", default=os.path.join(HERE, "..", "..", "target", "release"))
    p.add_argument("--time-resolution", default="seconds", choices=["seconds", "nanoseconds"])
    p.add_argument("--cluster", help="the database lives on the shards of this cluster (give every --shard)")
    p.add_argument("--shard", action="append", default=[], help="the HTTP URL of a shard's server (repeated)")
    p.add_argument("--out")
    a = p.parse_args()
    if bool(a.cluster) != bool(a.shard):
        sys.exit("store_scale: --cluster and --shard go together")
    url, db, binary = a.clickhouse_url.rstrip("/"), a.database, os.path.abspath(a.bin)
    # The servers holding parts, and the database there.
    servers = [s.rstrip("/") for s in a.shard] or [url]
    parts_db = f"{db}_local" if a.cluster else db
    pids = [clickhouse_pid(s) for s in servers]
    env = dict(os.environ)
    where = f"database `{db}`"
    if a.cluster:
        env.update(STORAGE_TRACKER_CLICKHOUSE_CLUSTER=a.cluster, STORAGE_TRACKER_CLICKHOUSE_SHARDS=",".join(servers))
        where = f"database `{db}` on the {len(servers)} shards of cluster `{a.cluster}` (local tables `{parts_db}`)"
    lines = [f"### {a.entries:,} entries per snapshot, times in {a.time_resolution}"
             + (f", on a cluster of {len(servers)} shards" if a.cluster else "") + "\n",
             f"ClickHouse {ch(url, 'SELECT version()').strip()}, {where}; binaries in `{binary}`.\n"]

    dirs = []
    gen_rows = []
    for snapshot in (1, 2):
        out = os.path.join(a.work, f"snapshot{snapshot}")
        subprocess.run(["rm", "-rf", out], check=True)
        wall, rss, cpu, stdout = timed([os.path.join(binary, "st-gen-chunks"), out, "--entries", str(a.entries),
                                        "--snapshot", str(snapshot), "--time-resolution", a.time_resolution])
        gen_rows.append(f"- snapshot {snapshot}: {stdout.strip()} ({wall:.1f} s)")
        dirs.append(out)
    lines += ["Generated by `st-gen-chunks`:\n"] + gen_rows + [""]

    for server in servers:
        ch(server, f"DROP DATABASE IF EXISTS {db}")
        ch(server, f"DROP DATABASE IF EXISTS {parts_db}")
    rows = []
    committed = []
    for snapshot, d in enumerate(dirs, 1):
        # What the servers hold before (their caches, from earlier queries) and at most during.
        for server, pid in zip(servers, pids):
            ch(server, "SYSTEM DROP MARK CACHE")
            ch(server, "SYSTEM DROP UNCOMPRESSED CACHE")
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM
        ch_before = sum(rss_mib(pid) for pid in pids)
        ch_cpu = sum(cpu_seconds(pid) for pid in pids)
        wall, rss, cpu, _ = timed([os.path.join(binary, "storage-aggregator"), "import", d,
                                   "--clickhouse-url", url, "--database", db], env=env)
        ch_cpu = sum(cpu_seconds(pid) for pid in pids) - ch_cpu
        ch_rss = sum(peak_rss_mib(pid) for pid in pids)
        sid, entries, commit = ch(url, f"SELECT snapshot_id, entries, commit_seconds FROM {db}.snapshots FINAL "
                                       "WHERE state = 'committed' ORDER BY snapshot_id DESC LIMIT 1 FORMAT TSV").split()
        entries, commit = int(entries), float(commit)
        committed.append((int(sid), entries))
        per_m = entries / 1e6
        rows.append(f"| {snapshot} | {entries:,} | {wall:.1f} | {entries / wall:,.0f} | {commit:.1f} | "
                    f"{entries / commit:,.0f} | {cpu / per_m:.2f} | {ch_cpu / per_m:.2f} | {rss:.0f} | "
                    f"{ch_before:.0f} -> {ch_rss:.0f} |")
    lines += ["| snapshot | entries | import + commit s | entries/s | commit s | commit entries/s | "
              "aggregator CPU s / M | ClickHouse CPU s / M | aggregator peak RSS MiB | ClickHouse RSS before -> peak MiB |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"] + rows + [""]

    total = sum(e for _, e in committed)
    if a.cluster:
        per_shard = [int(ch(s, f"SELECT count() FROM {parts_db}.entries")) for s in servers]
        lines += ["Entries per shard (both snapshots): " + ", ".join(f"{n:,}" for n in per_shard) + "\n"]
    as_committed = table_bytes(servers, parts_db)
    for server in servers:
        for table in as_committed:
            ch(server, f"OPTIMIZE TABLE {parts_db}.{table} FINAL")
    merged = table_bytes(servers, parts_db)
    lines += ["Bytes per entry on disk (both snapshots' entries), as committed and after a final merge:\n",
              "| table | as committed | merged |", "|---|---:|---:|"]
    for table in sorted(merged, key=lambda t: -merged[t]):
        lines.append(f"| {table} | {as_committed.get(table, 0) / total:.2f} | {merged[table] / total:.2f} |")
    lines.append(f"| all | {sum(as_committed.values()) / total:.2f} | {sum(merged.values()) / total:.2f} |\n")

    port = free_port()
    api = subprocess.Popen([os.path.join(binary, "storage-api"), "--listen", f"127.0.0.1:{port}",
                            "--clickhouse-url", url, "--clickhouse-user", a.reader, "--database", db],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/api/v1/snapshots", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        latest = committed[-1][0]
        latency = subprocess.run([sys.executable, os.path.join(HERE, "api_latency.py"), base, str(latest)],
                                 capture_output=True, text=True)
        if latency.returncode != 0:
            sys.exit(f"store_scale: api_latency.py failed:\n{latency.stderr[-3000:]}")
        lines += [f"API (storage-api as `{a.reader}`), snapshot {latest}: " + latency.stdout.strip(), ""]
    finally:
        api.terminate()
        api.wait()
    section = "\n".join(lines) + "\n"
    print(section)
    if a.out:
        with open(a.out, "a") as f:
            f.write(section)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The query console and the filter builder against a running storage-api, beside the peer
that bounds them: the same statement sent straight to ClickHouse's HTTP interface as the same
read-only user.

  console.py BASE_URL SNAPSHOT --clickhouse-url URL --database DB [--reader USER]
             [--token T] [--runs 5] [--rows 1000000] [--out FILE]

Times, median (min-max) of --runs:
- every preset of the snapshot through the console (JSON, the first 1,000 rows), and the same
  statement through ClickHouse (TabSeparatedWithNamesAndTypes, wait_end_of_query=1: what the
  console asks for); the ratio is the console's cost over ClickHouse's own;
- a download of --rows rows (path, size, uid, mtime_ns) as CSV, TSV and Markdown through the
  console, and as CSV and TSV straight from ClickHouse: seconds, MB/s, ratio;
- the filter builder: a search of files of two types, filters only, under the root, sorted by
  each column (largest first can come from the snapshot's largest entries; the others read
  every match).
Prints a Markdown section (appended to --out).
"""
import argparse
import json
import statistics
import time
import urllib.parse
import urllib.request


def timed(url, data=None, token=None):
    request = urllib.request.Request(url, data=data)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        body = response.read()
    return time.perf_counter() - start, body


def runs(n, f):
    times = []
    body = None
    for _ in range(n):
        t, body = f()
        times.append(t)
    return times, body


def fmt(times):
    return f"{statistics.median(times):.3f} ({min(times):.3f}-{max(times):.3f})"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base")
    p.add_argument("snapshot", type=int)
    p.add_argument("--clickhouse-url", required=True)
    p.add_argument("--database", required=True)
    p.add_argument("--reader", default="storage_reader")
    p.add_argument("--token")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--out")
    a = p.parse_args()
    base, s = a.base.rstrip("/"), a.snapshot

    def console(sql, **params):
        q = urllib.parse.urlencode({"sql": sql, **params})
        return lambda: timed(f"{base}/api/v1/console?{q}", token=a.token)

    def clickhouse(sql, fmt_name):
        q = urllib.parse.urlencode({"user": a.reader, "database": a.database, "wait_end_of_query": 1})
        body = f"{sql} FORMAT {fmt_name}".encode()
        return lambda: timed(f"{a.clickhouse_url}/?{q}", data=body)

    _, presets = timed(f"{base}/api/v1/snapshots/{s}/console/presets?days=365", token=a.token)
    presets = json.loads(presets)["presets"]
    _, snap = timed(f"{base}/api/v1/snapshots/{s}", token=a.token)
    entries = json.loads(snap)["entries"]
    lines = [f"### Snapshot {s} ({entries:,} entries), {a.runs} runs each, seconds: median (min-max)\n"]

    lines += ["#### Presets: the console (JSON, first 1,000 rows) and ClickHouse itself\n",
              "| preset | rows | console | ClickHouse | console / ClickHouse |", "|---|---:|---:|---:|---:|"]
    for preset in presets:
        ours, body = runs(a.runs, console(preset["sql"], limit=1000))
        total = json.loads(body)["total_rows"]
        theirs, _ = runs(a.runs, clickhouse(preset["sql"], "TabSeparatedWithNamesAndTypes"))
        ratio = statistics.median(ours) / statistics.median(theirs)
        lines.append(f"| {preset['id']} | {total:,} | {fmt(ours)} | {fmt(theirs)} | {ratio:.2f}x |")

    sql = (f"SELECT path, size, uid, mtime_ns FROM entries WHERE snapshot_id = {s} "
           f"LIMIT {a.rows}")
    lines += ["", f"#### A download of {a.rows:,} rows (`{sql}`)\n",
              "| through | format | seconds | MB | MB/s | relative to ClickHouse's TSV |", "|---|---|---:|---:|---:|---:|"]
    base_t, _ = runs(a.runs, clickhouse(sql, "TabSeparated"))
    measured = [("ClickHouse", "TSV", base_t, None)]
    measured.append(("ClickHouse", "CSV", *runs(a.runs, clickhouse(sql, "CSV"))))
    for f in ("tsv", "csv", "markdown"):
        measured.append(("console", f.upper() if f != "markdown" else "Markdown", *runs(a.runs, console(sql, format=f))))
    _, tsv_body = clickhouse(sql, "TabSeparated")()
    for through, f, t, body in measured:
        size = len(body if body is not None else tsv_body) / 1e6
        med = statistics.median(t)
        lines.append(f"| {through} | {f} | {fmt(t)} | {size:.1f} | {size / med:.0f} | "
                     f"{med / statistics.median(base_t):.2f}x |")

    lines += ["", "#### The filter builder: files of two types under the root, filters only, a page of 100\n",
              "| sort | total | seconds |", "|---|---:|---:|"]
    for sort, order in (("size", "desc"), ("name", "asc"), ("path", "asc"), ("mtime", "desc"), ("atime", "asc")):
        q = urllib.parse.urlencode({"kind": "file", "type": "h5,nc", "sort": sort, "order": order, "limit": 100})
        t, body = runs(a.runs, lambda: timed(f"{base}/api/v1/snapshots/{s}/search?{q}", token=a.token))
        lines.append(f"| {sort} {order} | {json.loads(body)['total']:,} | {fmt(t)} |")

    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "a", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

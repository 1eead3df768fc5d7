#!/usr/bin/env python3
"""API latency: p50 and p99 of the requests the UI makes most, against a running storage-api.

  api_latency.py BASE_URL SNAPSHOT [--token T] [--out FILE]

Samples directories from the snapshot itself (the children of the root, then of those, down
three levels), then times: children of 200 sampled directories; treemap data three levels deep
for 20 of them and for the root; the largest files and directories of the root and of sampled
directories; name searches (substring, glob, regex) over the whole snapshot and under one
directory of the second level; stale files under sampled directories (time to the first rows
of the CSV stream); history and growth of sampled directories when a second snapshot exists.
The search words are those of st-gen-chunks' trees.
"""
import argparse
import json
import random
import statistics
import time
import urllib.parse
import urllib.request


def get(base, path, token):
    request = urllib.request.Request(base + path)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
    return time.perf_counter() - start, json.loads(body) if body[:1] in (b"{", b"[") else body


def first_bytes(base, path, token, whole=True):
    """Seconds until the first bytes of the answer arrive (the rest is read and dropped, or,
    not `whole`, the connection closed)."""
    request = urllib.request.Request(base + path)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read(1)
        first = time.perf_counter() - start
        while whole and response.read(1 << 16):
            pass
    return first


def q(path):
    return urllib.parse.quote(path, safe="/")


def summary(name, seconds):
    ms = sorted(s * 1000 for s in seconds)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {p99:.1f} | {ms[-1]:.1f} |"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("snapshot", type=int)
    p.add_argument("--token")
    p.add_argument("--out")
    a = p.parse_args()
    base, s, t = a.base.rstrip("/"), a.snapshot, a.token
    random.seed(1)
    _, snap = get(base, f"/api/v1/snapshots/{s}", t)
    root = snap["root_path"]
    dirs, frontier = [root], [root]
    for _ in range(3):
        nxt = []
        for d in frontier[:40]:
            _, children = get(base, f"/api/v1/snapshots/{s}/children?path={q(d)}&limit=50", t)
            nxt += [c["path"] for c in children["children"] if c["kind"] == "dir"]
        dirs += nxt
        frontier = nxt
    get(base, f"/api/v1/snapshots/{s}/children?path={q(root)}", t)  # warm-up
    rows = []
    sample = [random.choice(dirs) for _ in range(200)]
    rows.append(summary("children of a directory (100 per page)",
                        [get(base, f"/api/v1/snapshots/{s}/children?path={q(d)}", t)[0] for d in sample]))
    rows.append(summary("children sorted by mtime",
                        [get(base, f"/api/v1/snapshots/{s}/children?path={q(d)}&sort=mtime", t)[0] for d in sample[:50]]))
    rows.append(summary("treemap of the root, 3 levels, 40 children each",
                        [get(base, f"/api/v1/snapshots/{s}/treemap?depth=3", t)[0] for _ in range(10)]))
    rows.append(summary("treemap of a directory, 3 levels",
                        [get(base, f"/api/v1/snapshots/{s}/treemap?depth=3&path={q(d)}", t)[0] for d in sample[:20]]))
    rows.append(summary("top 100 files of the snapshot",
                        [get(base, f"/api/v1/snapshots/{s}/top?what=files", t)[0] for _ in range(5)]))
    rows.append(summary("top 100 directories of the snapshot",
                        [get(base, f"/api/v1/snapshots/{s}/top?what=dirs", t)[0] for _ in range(5)]))
    rows.append(summary("top 100 files under a directory",
                        [get(base, f"/api/v1/snapshots/{s}/top?what=files&path={q(d)}", t)[0] for d in sample[:30]]))
    rows.append(summary("top 100 directories under a directory",
                        [get(base, f"/api/v1/snapshots/{s}/top?what=dirs&path={q(d)}", t)[0] for d in sample[:30]]))
    searches = ["q=output_0001", "q=.h5", "q=slurm-1*.out&match=glob", "q=%5Echeckpoint_00%5B0-2%5D%5C.chk%24&match=regex",
                "q=part&type=nc&min_size=1000000"]
    rows.append(summary("search by name over the snapshot (substring, glob, regex, filters)",
                        [get(base, f"/api/v1/snapshots/{s}/search?{x}", t)[0] for x in searches * 2]))
    second_level = [d for d in dirs if d.count("/") == root.count("/") + 2] or [root]
    rows.append(summary("search by name under a directory of the second level",
                        [get(base, f"/api/v1/snapshots/{s}/search?{x}&path={q(random.choice(second_level))}", t)[0]
                         for x in searches * 2]))
    rows.append(summary("stale files under a directory, CSV: first rows",
                        [first_bytes(base, f"/api/v1/snapshots/{s}/stale?days=365&format=csv&path={q(d)}", t)
                         for d in sample[:20]]))
    # The whole download under the root reads every stale row of the snapshot: only its start.
    rows.append(summary("stale files under the root, CSV: first rows",
                        [first_bytes(base, f"/api/v1/snapshots/{s}/stale?days=365&format=csv", t, whole=False)
                         for _ in range(5)]))
    rows.append(summary("usage by user", [get(base, f"/api/v1/snapshots/{s}/usage?by=user", t)[0] for _ in range(10)]))
    rows.append(summary("history of a directory",
                        [get(base, f"/api/v1/history?path={q(d)}", t)[0] for d in sample[:50]]))
    if s > 1:
        rows.append(summary(f"growth {s - 1} -> {s} of a directory",
                            [get(base, f"/api/v1/growth?from={s - 1}&to={s}&path={q(d)}", t)[0] for d in sample[:50]]))
    table = "| request | n | median ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n"
    header = f"{snap['entries']} entries, snapshot {s}, {len(dirs)} directories sampled\n\n"
    print(header + table)
    if a.out:
        with open(a.out, "a") as f:
            f.write(header + table + "\n")


if __name__ == "__main__":
    main()

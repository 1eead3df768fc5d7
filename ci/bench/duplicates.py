#!/usr/bin/env python3
"""Duplicate files: `storage-scan --hash-duplicates` against rdfind, jdupes and fdupes on one
generated tree, in one run.

  duplicates.py --work DIR --clickhouse-url URL [--files N] [--runs R] [--bin DIR] [--out FILE]

The tree: N files of 1-16 MiB (written whole, so each costs its bytes on disk), in groups of one
size: a third are copies of another file (2-4 copies each, some with a hard link), a third
near-duplicates (same size, one byte differs between sampled blocks: they are read whole to be
told apart), a third of a size of their own. It is scanned once into a fresh database (through a
storage-aggregator on loopback); then each tool finds the duplicates `--runs` times, caches warm
(the tree is read once first), and the medians are compared:

- storage-scan --hash-duplicates, 1 rank x 2 threads and 2 ranks x 1 thread (mpiexec.mpich);
  each run on a fresh copy of the snapshot's hashes (they are dropped before each run);
- rdfind -dryrun true (size, first and last bytes, then SHA-1 of the whole content);
- jdupes -r (size, a partial hash, then the whole content, byte-compared);
- fdupes -r (size, a partial MD5, the whole MD5, then byte-compared).

Each tool's answer is checked against the truth: the groups of identical content (hard links
are one file). Prints a Markdown section, appended to --out.
"""
import argparse
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
MIB = 1 << 20


def ch(url, sql):
    request = urllib.request.Request(url, data=sql.encode())
    with urllib.request.urlopen(request, timeout=600) as response:
        return response.read().decode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_tree(root, files, seed):
    """The tree, and the truth: the sets of paths (one per inode) of each group of copies."""
    rng = random.Random(seed)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    groups = []
    made = 0
    n = 0
    while made < files:
        kind = made % 3
        size = rng.randrange(1, 17) * MIB + rng.randrange(0, MIB)
        body = rng.randbytes(size)
        d = os.path.join(root, f"d{n % 40:02d}", f"g{n:05d}")
        os.makedirs(d, exist_ok=True)
        if kind == 0:
            copies = rng.randrange(2, 5)
            paths = []
            for c in range(copies):
                p = os.path.join(root, f"d{(n + c) % 40:02d}", f"copy{n:05d}-{c}.dat")
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p, "wb") as f:
                    f.write(body)
                paths.append(p)
            if rng.random() < 0.3:
                os.link(paths[0], paths[0] + ".link")
            groups.append(sorted(paths))
            made += copies
        elif kind == 1:
            a, b = os.path.join(d, "near-a.dat"), os.path.join(d, "near-b.dat")
            with open(a, "wb") as f:
                f.write(body)
            changed = bytearray(body)
            changed[size // 2 + 12345] ^= 1
            with open(b, "wb") as f:
                f.write(changed)
            made += 2
        else:
            with open(os.path.join(d, "single.dat"), "wb") as f:
                f.write(body)
            made += 1
        n += 1
    return groups


def median_run(cmd, runs, before=None, env=None):
    times = []
    out = ""
    for _ in range(runs):
        if before:
            before()
        start = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - start)
        if p.returncode not in (0, 3):
            sys.exit(f"duplicates: {' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-3000:]}")
        out = p.stdout
    return statistics.median(times), min(times), max(times), out


def groups_of_blank_separated(out, root):
    """jdupes and fdupes print groups of paths separated by blank lines."""
    groups, current = [], []
    for line in out.splitlines() + [""]:
        if line.strip():
            current.append(os.path.realpath(line.strip()))
        elif current:
            groups.append(current)
            current = []
    return groups


def canonical_paths(root):
    """Each file (device and inode) of the tree by its smallest path, whatever link names it."""
    canon = {}
    for d, _, files in os.walk(root):
        for f in files:
            path = os.path.join(d, f)
            st = os.lstat(path)
            key = (st.st_dev, st.st_ino)
            canon[key] = min(canon.get(key, path), path)
    return canon


def normalise(groups, canon):
    """Groups as sets of files, each by its smallest path; groups of one file dropped."""
    out = []
    for g in groups:
        files = sorted({canon[(st.st_dev, st.st_ino)] for st in (os.lstat(p) for p in g)})
        if len(files) > 1:
            out.append(tuple(files))
    return sorted(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--clickhouse-url", required=True)
    p.add_argument("--files", type=int, default=300)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--bin", default=os.path.join(HERE, "..", "..", "target", "release"))
    p.add_argument("--out")
    a = p.parse_args()
    url, binary = a.clickhouse_url.rstrip("/"), os.path.abspath(a.bin)
    root = os.path.realpath(os.path.join(a.work, "tree"))
    truth = make_tree(root, a.files, seed=7)
    total = int(subprocess.run(["du", "-sb", "--apparent-size", root], capture_output=True, text=True).stdout.split()[0])
    subprocess.run(["cat"] + [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs],
                   stdout=subprocess.DEVNULL, check=True)
    canon = canonical_paths(root)
    truth = normalise(truth, canon)

    db = "bench_duplicates"
    ch(url, f"DROP DATABASE IF EXISTS {db}")
    port = free_port()
    spool = os.path.join(a.work, "spool")
    shutil.rmtree(spool, ignore_errors=True)
    aggregator = subprocess.Popen([os.path.join(binary, "storage-aggregator"), "serve", "--listen", f"127.0.0.1:{port}",
                                   "--spool", spool, "--clickhouse-url", url, "--database", db],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    address = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        subprocess.run([os.path.join(binary, "storage-scan"), "--aggregator", address, root], check=True,
                       capture_output=True, env=env)
        sid = ch(url, f"SELECT max(snapshot_id) FROM {db}.snapshots FINAL WHERE state = 'committed'").strip()

        def drop_hashes():
            ch(url, f"ALTER TABLE {db}.file_hashes DROP PARTITION {sid}")

        scan = os.path.join(binary, "storage-scan")
        hashing = [scan, "--hash-duplicates", sid, "--aggregator", address, "--progress-interval", "86400"]
        rows = []
        ours = {}
        for name, cmd in [
            ("storage-scan --hash-duplicates (1 rank x 2 threads)", hashing + ["--threads", "2"]),
            ("storage-scan --hash-duplicates (2 ranks x 1 thread)", ["mpiexec.mpich", "-n", "2"] + hashing + ["--threads", "1"]),
        ]:
            med, lo, hi, _ = median_run(cmd, a.runs, before=drop_hashes, env=env)
            ours[name] = med
            rows.append((name, med, lo, hi))
        # Our answer: the confirmed groups, one link per file.
        found = ch(url, f"SELECT groupArray(p) FROM (SELECT full, min(concat(parent_path, '/', name)) AS p "
                        f"FROM {db}.dup_candidates AS c ANY INNER JOIN (SELECT dev, ino, max(full) AS full "
                        f"FROM {db}.file_hashes WHERE snapshot_id = {sid} GROUP BY dev, ino) AS h USING (dev, ino) "
                        f"WHERE snapshot_id = {sid} AND full != '' GROUP BY dev, ino, full) GROUP BY full "
                        "HAVING count() > 1 FORMAT TSV")
        answer = normalise([re.findall(r"'((?:[^'\\]|\\.)*)'", line) for line in found.splitlines()], canon)
        checks = {"storage-scan": answer == truth}
        for name, cmd, parse in [
            ("rdfind -dryrun true", ["rdfind", "-dryrun", "true", "-outputname", os.path.join(a.work, "rdfind.txt"), root], "rdfind"),
            ("jdupes -r", ["jdupes", "-r", "-q", root], "blank"),
            ("fdupes -r", ["fdupes", "-r", "-q", root], "blank"),
        ]:
            if not shutil.which(cmd[0]):
                sys.exit(f"duplicates: {cmd[0]} is missing; ci/bench/install-peers.sh installs it")
            med, lo, hi, out = median_run(cmd, a.runs)
            rows.append((name, med, lo, hi))
            if parse == "rdfind":
                groups = {}
                for line in open(os.path.join(a.work, "rdfind.txt")):
                    if line.startswith("#"):
                        continue
                    parts = line.split(None, 7)
                    if len(parts) == 8:
                        groups.setdefault(parts[1].lstrip("-"), []).append(parts[7].rstrip("\n"))
                got = normalise(groups.values(), canon)
            else:
                # jdupes and fdupes list hard links of one file as duplicates unless told not
                # to; one link per inode is kept before comparing.
                got = normalise(groups_of_blank_separated(out, root), canon)
            checks[name.split()[0]] = got == truth
            if got != truth:
                print(f"{name}: {len(got)} groups, truth {len(truth)}; first differences: "
                      f"{sorted(set(got) ^ set(truth))[:3]}", file=sys.stderr)
    finally:
        aggregator.terminate()
        aggregator.wait()
        ch(url, f"DROP DATABASE IF EXISTS {db}")

    base = ours["storage-scan --hash-duplicates (1 rank x 2 threads)"]
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"### Duplicate files: {a.files} files, {total / MIB:,.0f} MiB, {len(truth)} groups of copies\n",
        f"{cpu} cores; caches warm; {a.runs} runs of each tool in turn; median (min-max) seconds. "
        "storage-scan's runs each start from no hashes (the snapshot's are dropped first); its time "
        "includes asking the aggregator for the candidates and storing every hash in ClickHouse.\n",
        "| tool | seconds | MiB/s of the tree | storage-scan (1x2) is faster by | answer equals the truth |",
        "|---|---:|---:|---:|---|",
    ]
    for name, med, lo, hi in rows:
        key = "storage-scan" if name.startswith("storage-scan") else name.split()[0]
        lines.append(f"| {name} | {med:.2f} ({lo:.2f}-{hi:.2f}) | {total / MIB / med:,.0f} | {med / base:.2f}x | "
                     f"{'yes' if checks[key] else 'NO'} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "a") as f:
            f.write(text + "\n")
    if not all(checks.values()):
        sys.exit("duplicates: an answer differs from the truth")


if __name__ == "__main__":
    main()

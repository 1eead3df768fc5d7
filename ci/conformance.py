#!/usr/bin/env python3
"""Portable SQL: every statement the project sends, replayed on a modern ClickHouse.

  conformance.py proxy --listen PORT --upstream URL --log FILE
      An HTTP proxy in front of the CI ClickHouse (18.16). It forwards every request and
      records it: the statement, its data (for INSERTs) and, for each SELECT, its result as
      TabSeparated, read from 18.16 right after the statement ran (same state).

  conformance.py replay --log FILE
      Replays the recorded statements in order on chDB (the ClickHouse engine in process, a
      current release) and compares every SELECT's result with 18.16's (as sorted lines).
      Exits 1 listing each statement that fails on the modern engine or answers differently.
"""

import argparse
import base64
import http.client
import http.server
import json
import os
import re
import sys
import tempfile
import threading
import urllib.parse

FORMAT_TAIL = re.compile(r"\s+FORMAT\s+\w+\s*;?\s*$", re.IGNORECASE)
INSERT_HEAD = re.compile(
    r"^\s*INSERT\s+INTO\s+([\w.`\"]+)\s*\(([^)]*)\)\s*FORMAT\s+RowBinary\s*$",
    re.IGNORECASE | re.DOTALL,
)


def statement_of(params, body):
    """The SQL text and the data of one request."""
    if "query" in params:
        return params["query"], body
    return body.decode("utf-8", "surrogateescape"), b""


def is_select(sql):
    return re.match(r"^\s*(SELECT|DESCRIBE|SHOW)\b", sql, re.IGNORECASE) is not None


def as_tsv(sql):
    return FORMAT_TAIL.sub("", sql) + " FORMAT TabSeparated"


def proxy(args):
    upstream = urllib.parse.urlsplit(args.upstream)
    lock = threading.Lock()
    log = open(args.log, "a", encoding="utf-8")

    def forward(method, path, body, headers):
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=600)
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response, data

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def handle_one(self, method):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    body += self.rfile.read(size)
                    self.rfile.readline()
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")
            }
            headers["Content-Length"] = str(len(body))
            response, data = forward(method, self.path, body, headers)
            split = urllib.parse.urlsplit(self.path)
            params = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
            sql, insert_data = statement_of(params, body)
            record = {
                "database": params.get("database", ""),
                "sql": sql,
                "data_b64": base64.b64encode(insert_data).decode(),
                "status": response.status,
            }
            if response.status == 200 and is_select(sql) and split.path in ("", "/"):
                q = urllib.parse.urlencode(
                    {k: v for k, v in params.items() if k in ("database", "user", "password")}
                )
                r2, tsv = forward("POST", "/?" + q, as_tsv(sql).encode("utf-8", "surrogateescape"),
                                  {k: v for k, v in headers.items() if k.lower().startswith("x-clickhouse")})
                if r2.status == 200:
                    record["tsv_b64"] = base64.b64encode(tsv).decode()
            if split.path in ("", "/"):
                with lock:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
            self.send_response(response.status)
            for k, v in response.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self.handle_one("GET")

        def do_POST(self):
            self.handle_one("POST")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.listen), Handler)
    server.serve_forever()


def replay(args):
    from chdb import session  # PyPI chdb-core

    workdir = tempfile.mkdtemp(prefix="conformance-")
    s = session.Session(os.path.join(workdir, "db"))
    records = [json.loads(line) for line in open(args.log, encoding="utf-8")]
    failures = []
    compared = 0
    replayed = 0

    def run(sql, fmt="TabSeparated"):
        return s.query(sql, fmt).bytes()

    for n, r in enumerate(records, 1):
        sql = r["sql"]
        if r["status"] != 200:
            continue  # 18.16 refused it too (e.g. a test of bad input)
        data = base64.b64decode(r["data_b64"])
        try:
            m = INSERT_HEAD.match(sql)
            if m:
                table = m.group(1).replace("`", "").replace('"', "")
                if "." not in table:
                    table = f"{r['database']}.{table}"
                columns = [c.strip().strip("`\"") for c in m.group(2).split(",")]
                types = {}
                for line in run(f"DESCRIBE TABLE {table}").decode().splitlines():
                    name, typ = line.split("\t")[:2]
                    types[name] = typ
                structure = ", ".join(f"{c} {types[c]}" for c in columns)
                path = os.path.join(workdir, f"insert-{n}.bin")
                with open(path, "wb") as f:
                    f.write(data)
                run(f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM file('{path}', 'RowBinary', '{structure}')")
                os.remove(path)
            elif is_select(sql):
                if r.get("database"):
                    run(f"USE {r['database']}")
                got = run(as_tsv(sql))
                want = base64.b64decode(r["tsv_b64"]) if "tsv_b64" in r else None
                deterministic = "system." not in sql and "version()" not in sql
                if want is not None and deterministic:
                    compared += 1
                    if sorted(got.splitlines()) != sorted(want.splitlines()):
                        failures.append((n, sql, f"18.16 answered {want[:300]!r}, the modern engine {got[:300]!r}"))
            else:
                if r.get("database"):
                    run(f"USE {r['database']}")
                run(FORMAT_TAIL.sub("", sql))
            replayed += 1
        except Exception as e:  # the modern engine refused a statement 18.16 ran
            failures.append((n, sql, str(e).strip()[:500]))

    print(f"conformance: {len(records)} statements recorded, {replayed} replayed on chDB "
          f"{run('SELECT version()').decode().strip()}, {compared} results compared, "
          f"{len(failures)} failed")
    for n, sql, why in failures:
        print(f"--- statement {n}: {why}\n{sql[:2000]}\n")
    return 1 if failures else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("proxy")
    a.add_argument("--listen", type=int, required=True)
    a.add_argument("--upstream", required=True)
    a.add_argument("--log", required=True)
    b = sub.add_parser("replay")
    b.add_argument("--log", required=True)
    args = p.parse_args()
    if args.cmd == "proxy":
        proxy(args)
    else:
        sys.exit(replay(args))


if __name__ == "__main__":
    main()

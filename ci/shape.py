#!/usr/bin/env python3
"""Checks of the code's shape that the compiler does not make.

- No import cycle between the top-level modules of a crate: a module's `crate::x` paths (in
  `use` or in code, tests and comments aside) name the modules it depends on, and following
  them never leads back to it. (A module and its own submodules count as one.)
- The API writes SQL only in its query modules (api/src/query.rs, api/src/query/): no other
  file of api/src names a statement's keywords or calls the quoting functions.

Prints what it found and exits 1 on any fault. Run by ci/test.sh with the lints.
"""

import os
import re
import sys

CRATES = ["proto", "aggregator", "api", "scanner-mpi", "ci/bench", "ci/bench/lab"]
# Lines that would be SQL outside the API's query modules.
SQL = re.compile(
    r"\b(SELECT|PREWHERE|GROUP BY|ORDER BY|LEFT JOIN|INNER JOIN|ANY LEFT JOIN)\b"
    r"|\bquote_(bytes|str)\(|\b(subtree|parent_within|export_sql)\("
)


def code_of(path):
    """The file's text without its `#[cfg(test)]` module and without comment lines."""
    text = open(path, encoding="utf-8").read()
    cut = text.find("#[cfg(test)]")
    if cut >= 0:
        text = text[:cut]
    return "\n".join(l for l in text.split("\n") if not l.lstrip().startswith("//"))


def modules(src):
    """Top-level module name -> its files (lib.rs, main.rs and bin/ are the crate root)."""
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            parts = os.path.relpath(path, src)[:-3].split("/")
            root = parts in (["lib"], ["main"]) or parts[0] == "bin"
            mods.setdefault("" if root else parts[0], []).append(path)
    return mods


def named_modules(text):
    """The first segment of every `crate::` path, `crate::{a, b::c}` groups included."""
    names = set()
    for m in re.finditer(r"\bcrate::", text):
        rest = text[m.end():]
        if not rest.startswith("{"):
            first = re.match(r"[a-z_][a-z0-9_]*", rest)
            if first:
                names.add(first.group(0))
            continue
        depth, start_of_item, token = 0, True, ""
        for ch in rest:
            if ch == "{":
                depth += 1
                start_of_item = depth == 1
                continue
            if ch == "}":
                depth -= 1
                if depth == 0:
                    break
                continue
            if depth != 1:
                continue
            if ch.isalnum() or ch == "_":
                token += ch
                continue
            if token and start_of_item:
                names.add(token)
            start_of_item = ch == "," or (start_of_item and ch.isspace() and not token)
            token = ""
    return names


def cycles(crate):
    mods = modules(os.path.join(crate, "src"))
    edges = {}
    for name, paths in mods.items():
        if not name:
            continue
        for path in paths:
            for used in named_modules(code_of(path)):
                if used in mods and used and used != name:
                    edges.setdefault(name, set()).add(used)
    found = set()

    def walk(node, path):
        for nxt in sorted(edges.get(node, ())):
            if nxt in path:
                c = path[path.index(nxt):]
                i = c.index(min(c))
                found.add(tuple(c[i:] + c[:i]))
            else:
                walk(nxt, path + [nxt])

    for node in sorted(edges):
        walk(node, [node])
    return sorted(found)


def sql_outside_query():
    faults = []
    src = "api/src"
    for dirpath, _, files in os.walk(src):
        for f in sorted(files):
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, src)
            if not f.endswith(".rs") or rel == "query.rs" or rel.startswith("query/"):
                continue
            # The OpenAPI document describes parameters in prose that may say "ORDER BY".
            if rel == "openapi.rs":
                continue
            for line in code_of(path).split("\n"):
                if SQL.search(line):
                    faults.append(f"{path}: SQL outside api/src/query: {line.strip()}")
    return faults


def main():
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    bad = False
    for crate in CRATES:
        found = cycles(crate)
        for c in found:
            print(f"{crate}: import cycle: {' -> '.join(c + (c[0],))}")
        bad |= bool(found)
    faults = sql_outside_query()
    for f in faults:
        print(f)
    bad |= bool(faults)
    if not bad:
        print(f"shape: no import cycles in {', '.join(CRATES)}; the API's SQL is in api/src/query")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

// The whole of storage-tracker for the browser tests, on real parts: a fixture tree scanned by
// storage-scan into a storage-aggregator writing to the test ClickHouse, and storage-api serving
// the built UI, all on 127.0.0.1. Three snapshots: #1 of a subdirectory (another root, so not
// comparable with the others), #2 of the whole tree with an --exclude that matches nothing
// (other scan options), #3 of the whole tree after changes. Nothing is faked; a part that is
// missing fails the run with what to do.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, truncateSync, utimesSync, writeFileSync, chownSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(here, "../..");
export const UI_DIST = resolve(here, "../dist");

/** A file name that looks like HTML: the UI must show it as text and never run it. */
export const HTML_FILE = '<img src=x onerror="window.__xss=1">.txt';
export const HTML_DIR = "<svg onload=window.__xss=2>";

/** Bearer tokens of the API started with tokens (test values, at least 24 characters). */
export const TOKENS = { admin: "admin-token-0123456789abcdef", leader: "leader-token-0123456789abcdef" };

const DAY = 86_400;
const MiB = 1 << 20;
/** How many 100-byte log files, untouched for 500 days, scratch/logs holds. */
export const STALE_LOGS = 300;
/** The root of snapshot #1, a subdirectory of the tree: another filesystem root. */
export const SUB_ROOT = "projects";
/** The options of the scan of snapshot #2 (an --exclude that matches nothing). */
export const SECOND_OPTIONS = ["--exclude", ".snapshot"];

/**
 * The fixture: [path, apparent bytes, uid, age in days, fill byte]; a trailing "/" is a directory.
 * Files are sparse (truncated to size), so the tree takes no room, except those with a fill byte,
 * written whole (copies whose duplicates waste real bytes); sizes and owners are exact.
 */
export const TREE = [
  ["projects/", 0, 0, 2],
  ["projects/climate/", 0, 0, 2],
  ["projects/climate/run-001.nc", 3 * MiB, 0, 40],
  ["projects/climate/run-002.nc", 2 * MiB, 0, 20],
  ["projects/climate/notes.md", 10_240, 0, 5],
  ["projects/climate/output/", 0, 0, 2],
  ...Array.from({ length: 24 }, (_, i) => [`projects/climate/output/step-${String(i).padStart(2, "0")}.h5`, (i + 1) * 200_000, 0, 3 + i]),
  ["projects/genomics/", 0, 65534, 10],
  ["projects/genomics/reads.fastq.gz", 48 * MiB, 65534, 100],
  ["projects/genomics/ref/", 0, 65534, 10],
  ["projects/genomics/ref/hg38.fa", 12 * MiB, 65534, 400],
  ["projects/genomics/ref/hg38.fa.fai", 8_000, 65534, 400],
  // Two copies of one file (hashed after the last scan), the second one's bytes wasted; below
  // the levels the root's treemap draws.
  ["projects/genomics/ref/backup/", 0, 4242, 10],
  ["projects/genomics/ref/backup/chr1.fa", 2 * MiB, 4242, 10, 7],
  ["projects/genomics/ref/chr1.fa", 2 * MiB, 4242, 10, 7],
  ["home/", 0, 0, 1],
  ["home/alice/", 0, 65534, 1],
  ["home/alice/.bashrc", 3_100, 65534, 900],
  ["home/alice/thesis.pdf", 7 * MiB, 65534, 30],
  ["home/alice/" + HTML_FILE, 1_234, 65534, 1],
  ["home/" + HTML_DIR + "/", 0, 4242, 1],
  ["home/" + HTML_DIR + "/data.bin", 5 * MiB, 4242, 60],
  ["scratch/", 0, 0, 1],
  ["scratch/old-run.tar", 20 * MiB, 4242, 1200],
  ["scratch/core.12345", 9 * MiB, 0, 800],
  ["scratch/tmp-1/", 0, 0, 700],
  ["scratch/tmp-1/partial.dat", 4 * MiB, 0, 700],
  // Many small stale files, so a CSV of stale data has more rows than a page of the table.
  ["scratch/logs/", 0, 4242, 500],
  ...Array.from({ length: STALE_LOGS }, (_, i) => [`scratch/logs/job-${String(i).padStart(3, "0")}.log`, 100, 4242, 500]),
];

/** What changes between the two scans. */
export const SECOND_SCAN = {
  added: [["projects/climate/run-003.nc", 8 * MiB, 0, 0]],
  removed: ["scratch/tmp-1/partial.dat", "scratch/tmp-1/"],
};

function build(root, entries, now) {
  for (const [rel, size, uid, , fill] of entries) {
    const path = join(root, rel);
    if (rel.endsWith("/")) mkdirSync(path, { recursive: true });
    else if (fill !== undefined) writeFileSync(path, Buffer.alloc(size, fill));
    else {
      writeFileSync(path, "");
      truncateSync(path, size);
    }
    chownSync(path, uid, uid);
  }
  // Times last, deepest first, so creating children does not touch a parent's mtime afterwards.
  for (const [rel, , , ageDays] of [...entries].reverse()) {
    const t = now - ageDays * DAY;
    utimesSync(join(root, rel), t, t);
  }
}

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/** Spawns a program, keeping what it prints (`output()`). */
function start(cmd, args, env = {}) {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  child.output = () => out;
  return child;
}

/** Runs a program to its end; its output, or an error with it. */
function run(cmd, args, log) {
  return new Promise((ok, fail) => {
    const child = start(cmd, args);
    child.on("error", fail);
    // "close": the program has exited and everything it printed has been read.
    child.on("close", (code) => {
      log.push(`$ ${cmd} ${args.join(" ")}\n${child.output()}`);
      code === 0 ? ok(child.output()) : fail(new Error(`${cmd} exited with ${code}:\n${child.output()}`));
    });
  });
}

/** Starts a server, recorded in `processes` to be stopped at the end. */
function daemon(cmd, args, processes, env = {}) {
  const child = start(cmd, args, env);
  processes.push(child);
  return child;
}

async function waitFor(what, check, child, seconds = 30) {
  const until = Date.now() + seconds * 1000;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}:\n${child.output()}`);
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not start in ${seconds} s:\n${child.output()}`);
}

async function clickhouse(url, sql) {
  const r = await fetch(url, { method: "POST", body: sql });
  if (!r.ok) throw new Error(`ClickHouse: ${sql}: ${await r.text()}`);
  return r.text();
}

/** Starts everything; `stop()` ends the processes and removes the database and the tree. */
export async function startStack() {
  const chUrl = process.env.STORAGE_TRACKER_TEST_CLICKHOUSE_URL;
  if (!chUrl) {
    throw new Error("STORAGE_TRACKER_TEST_CLICKHOUSE_URL is not set: the browser tests need a real ClickHouse; run ci/test.sh (or ci/clickhouse.sh start and export its URL)");
  }
  const bin = process.env.STORAGE_TRACKER_BIN_DIR ?? join(REPO, "target/debug");
  for (const name of ["storage-aggregator", "storage-scan", "storage-api"]) {
    if (!existsSync(join(bin, name))) throw new Error(`no ${name} in ${bin}: run cargo build --workspace --bins (or set STORAGE_TRACKER_BIN_DIR)`);
  }
  if (!existsSync(join(UI_DIST, "index.html"))) throw new Error(`the UI is not built (${UI_DIST}): run npm run build in ui/`);
  if (process.getuid?.() !== 0) throw new Error("the fixture gives files to other owners (chown): run the browser tests as root, as ci/test.sh does");

  const work = mkdtempSync(join(tmpdir(), "st-ui-"));
  const root = join(work, "cluster");
  const database = `st_ui_${process.pid}`;
  const processes = [];
  const log = [];
  const now = Math.floor(Date.now() / 1000);
  const stack = {
    root,
    database,
    url: "",
    log,
    async stop() {
      for (const p of processes) if (p.exitCode === null) p.kill("SIGTERM");
      await clickhouse(chUrl, `DROP DATABASE IF EXISTS ${database}`).catch(() => {});
      rmSync(work, { recursive: true, force: true });
    },
  };
  try {
    build(root, TREE, now);
    const grpc = await freePort();
    const aggregator = daemon(
      join(bin, "storage-aggregator"),
      ["serve", "--listen", `127.0.0.1:${grpc}`, "--spool", join(work, "spool"), "--clickhouse-url", chUrl, "--database", database],
      processes,
    );
    await waitFor(
      "storage-aggregator",
      () =>
        new Promise((ok) => {
          const s = new Socket();
          s.once("connect", () => (s.destroy(), ok(true)));
          s.once("error", () => ok(false));
          s.connect(grpc, "127.0.0.1");
        }),
      aggregator,
    );
    const scan = (label, dir = root, options = []) =>
      run(join(bin, "storage-scan"), ["--aggregator", `http://127.0.0.1:${grpc}`, "--label", label, ...options, dir], log);
    await scan("cluster", join(root, SUB_ROOT));
    await scan("cluster", root, SECOND_OPTIONS);
    for (const rel of SECOND_SCAN.removed) rmSync(join(root, rel), { recursive: true, force: true });
    build(root, SECOND_SCAN.added, now);
    utimesSync(join(root, "scratch"), now - DAY, now - DAY);
    utimesSync(join(root, "projects/climate"), now, now);
    await scan("cluster");
    // The last snapshot's duplicate candidates hashed.
    await run(join(bin, "storage-scan"), ["--hash-duplicates", "3", "--aggregator", `http://127.0.0.1:${grpc}`], log);
    aggregator.kill("SIGTERM");

    const http = await freePort();
    const api = daemon(
      join(bin, "storage-api"),
      ["--listen", `127.0.0.1:${http}`, "--clickhouse-url", chUrl, "--database", database, "--ui-dir", UI_DIST],
      processes,
    );
    stack.url = `http://127.0.0.1:${http}`;
    await waitFor("storage-api", async () => (await fetch(`${stack.url}/health`)).ok, api);

    // The same data behind tokens: an admin, and a group leader who may read alice's home only.
    const guarded = await freePort();
    const tokensApi = daemon(
      join(bin, "storage-api"),
      ["--listen", `127.0.0.1:${guarded}`, "--clickhouse-url", chUrl, "--database", database, "--ui-dir", UI_DIST],
      processes,
      { STORAGE_TRACKER_API_TOKENS: `admin ${TOKENS.admin} *\nleader ${TOKENS.leader} ${root}/home/alice` },
    );
    stack.guardedUrl = `http://127.0.0.1:${guarded}`;
    await waitFor("storage-api with tokens", async () => (await fetch(`${stack.guardedUrl}/health`)).ok, tokensApi);
    return stack;
  } catch (e) {
    await stack.stop();
    throw e;
  }
}

/** Sum of the fixture's file bytes matching `keep`, as it stands after the second scan. */
export function fixtureBytes(keep) {
  const removed = new Set(SECOND_SCAN.removed);
  return [...TREE, ...SECOND_SCAN.added]
    .filter(([rel]) => !rel.endsWith("/") && !removed.has(rel))
    .filter(keep)
    .reduce((sum, [, size]) => sum + size, 0);
}

/** How many files of the fixture match `keep`, as it stands after the second scan. */
export function fixtureFiles(keep = () => true) {
  const removed = new Set(SECOND_SCAN.removed);
  return [...TREE, ...SECOND_SCAN.added].filter(([rel]) => !rel.endsWith("/") && !removed.has(rel)).filter(keep).length;
}

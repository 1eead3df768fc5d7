// Browser tests of the web UI: Debian's Chromium (through playwright-core) against storage-api,
// storage-aggregator and ClickHouse, on a fixture scanned three times (see stack.mjs). Tests named
// "N-..." are regressions of item N of issue 11. Each test saves a screenshot in
// $STORAGE_TRACKER_SCREENSHOTS (default .work/test/screenshots) and requires a page without
// console errors, failed requests or exceptions (a Content Security Policy violation is one).
// "API types" checks that src/api.gen.ts is what the document the API serves generates.
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { createServer, request } from "node:http";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { generate, OUTPUT as API_TYPES } from "../scripts/api-types.mjs";
import { launch, page as newPage } from "./browser.mjs";
import { HTML_DIR, HTML_FILE, REPO, STALE_LOGS, SUB_ROOT, TOKENS, fixtureBytes, fixtureFiles, startStack } from "./stack.mjs";

const SHOTS = process.env.STORAGE_TRACKER_SCREENSHOTS ?? join(REPO, ".work/test/screenshots");
const MiB = 1 << 20;

let stack;
let browser;

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  stack = await startStack();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

async function open(path) {
  const p = await newPage(browser.context);
  await p.goto(`${stack.url}${path}`);
  return p;
}

async function done(p, name) {
  await p.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
  assert.deepEqual(p.problems(), [], "the page logged errors");
  await p.close();
}

const q = (params) => `/?${new URLSearchParams(params)}`;
const rowNames = (p, table = "table.children") => p.locator(`${table} tbody td.name-cell`).allInnerTexts();

/**
 * An HTTP proxy to `target` that, for the requests `cut` picks, sends the answer's status,
 * headers and a part of its body, then drops the connection: a server failing mid-stream.
 */
async function cuttingProxy(target, cut) {
  const server = createServer((req, res) => {
    const up = request(new URL(req.url, target), { method: req.method, headers: req.headers }, (r) => {
      const headers = { ...r.headers };
      if (!cut(req.url)) {
        res.writeHead(r.statusCode, headers);
        r.pipe(res);
        return;
      }
      delete headers["content-length"];
      res.writeHead(r.statusCode, headers);
      r.once("data", (d) => {
        r.destroy();
        res.write(d.subarray(0, Math.ceil(d.length / 2)), () => res.socket.destroy());
      });
    });
    up.on("error", () => res.destroy());
    req.pipe(up);
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((ok) => (server.closeAllConnections(), server.close(ok))),
  };
}

describe("web UI", () => {
  test("loads the latest snapshot: explorer, treemap and snapshot picker", async () => {
    const p = await open("/");
    await p.locator("table.children tbody tr.dir").first().waitFor();
    const names = (await rowNames(p)).map((s) => s.trim());
    // Largest first: projects (~92 MiB) before scratch (29 MiB) and home.
    assert.deepEqual(names, ["projects", "scratch", "home"]);
    assert.equal(await p.locator(".crumbs [aria-current]").innerText(), stack.root);
    const options = await p.locator(".picker select option").allInnerTexts();
    assert.equal(options.length, 3);
    assert.match(await p.locator(".picker select").inputValue(), /^3$/);
    await p.locator(".treemap svg g.cell.d1").first().waitFor();
    // Three directories, each with its two largest children (scratch/logs, 30 KB of 29 MiB, is
    // under a pixel and not drawn).
    assert.equal(await p.locator(".treemap svg g.cell").count(), 9);
    const summary = await p.locator("p.summary").innerText();
    assert.match(summary, new RegExp(`in ${fixtureFiles()} files`), summary);
    // The directory as an ncdu export.
    const [download] = await Promise.all([p.waitForEvent("download"), p.locator('button:has-text("export for ncdu")').click()]);
    assert.equal(download.suggestedFilename(), "ncdu-cluster-3.json");
    const ncdu = JSON.parse(readFileSync(await download.path(), "utf8"));
    assert.equal(ncdu[0], 1);
    assert.equal(ncdu[3][0].name, stack.root);
    await done(p, "01-load");
  });

  test("drills down in the treemap on click and by keyboard", async () => {
    const p = await open("/");
    // A directory's tile is covered by its children's but for its title band.
    await p.locator('.treemap g.cell.d1[data-name="projects"]').click({ position: { x: 12, y: 6 } });
    await p.waitForURL(/path=.*%2Fprojects(&|$)/);
    assert.equal(await p.locator(".crumbs [aria-current]").innerText(), "projects");
    // Deeper: a directory two levels down, clicked inside its parent's tile.
    await p.locator('.treemap g.cell.d2[data-name="output"]').click();
    await p.waitForURL(/path=.*%2Fprojects%2Fclimate%2Foutput(&|$)/);
    await p.locator('table.children tbody td.name-cell:has-text("step-23.h5")').waitFor();
    assert.equal(await p.locator("table.children tbody tr.file").count(), 24);
    await p.locator('.treemap g.cell.d1[data-name="step-23.h5"]').waitFor();
    await done(p, "02-treemap-drilldown");

    const k = await open(q({ path: `${stack.root}/projects` }));
    const first = k.locator(".treemap g.cell.d1[tabindex]").first();
    await first.focus();
    const name = await first.getAttribute("data-name");
    await k.keyboard.press("Enter");
    await k.waitForURL(new RegExp(`path=.*%2F${name}(&|$)`));
    await k.locator(`.crumbs [aria-current]:has-text("${name}")`).waitFor();
    await k.locator('table.children[aria-busy="false"] tbody tr').first().waitFor();
    // u goes back up, and the table's rows are reachable with j and Enter.
    await k.keyboard.press("u");
    await k.waitForURL(/path=.*%2Fprojects(&|$)/);
    await k.locator('table.children tbody td.name-cell:has-text("genomics")').waitFor();
    await k.keyboard.press("j");
    await k.keyboard.press("j");
    const focused = await k.evaluate(() => document.activeElement?.textContent);
    await k.keyboard.press("Enter");
    await k.waitForURL(new RegExp(`path=.*%2Fprojects%2F${focused}(&|$)`));
    await done(k, "03-keyboard");
  });

  test("lays out a Voronoi treemap in the worker, coloured by age", async () => {
    const p = await open(q({ path: `${stack.root}/projects`, layout: "voronoi", color: "age" }));
    await p.locator('.treemap svg[data-layout="voronoi"] g.cell polygon').first().waitFor();
    assert.ok((await p.locator(".treemap svg g.cell polygon").count()) >= 6);
    const legend = await p.locator(".legend").innerText();
    assert.match(legend, /under a month|1-3 months/);
    // Switching back is one select away and lands in the URL.
    await p.locator(".treemap select").first().selectOption("squarified");
    await p.waitForURL(/layout=squarified/);
    await p.locator('.treemap svg[data-layout="squarified"]').waitFor();
    await p.goBack();
    await p.locator('.treemap svg[data-layout="voronoi"]').waitFor();
    await done(p, "04-treemap-voronoi");
  });

  test("searches by name with filters, all in the URL", async () => {
    const p = await open(q({ view: "search" }));
    await p.locator('input[name="q"]').fill("run-");
    await p.locator('form.filters button[type="submit"]').click();
    await p.waitForURL(/q=run-/);
    await p.locator("table.results tbody tr").first().waitFor();
    const names = (await p.locator("table.results tbody td:first-child").allInnerTexts()).map((s) => s.trim());
    assert.deepEqual(names, ["run-003.nc", "run-001.nc", "run-002.nc"]);
    // The count of every match, from the API's total.
    await p.locator('.search p.muted.small:has-text("3 matches; sorted by size, descending")').waitFor();
    // A glob with a size filter, typed the way people write sizes.
    await p.locator('input[name="q"]').fill("*.h5");
    await p.locator('select[name="match"]').selectOption("glob");
    await p.locator('input[name="min_size"]').fill("4M");
    await p.locator('form.filters button[type="submit"]').click();
    await p.waitForURL(/min_size=4M/);
    await p.waitForFunction(() => document.querySelectorAll("table.results tbody tr").length === 4);
    const sizes = await p.locator("table.results tbody td:nth-child(3)").allInnerTexts();
    assert.deepEqual(sizes, ["4.58 MiB", "4.39 MiB", "4.20 MiB", "4.01 MiB"]);
    // A bad size is refused in the page, before any request.
    await p.locator('input[name="min_size"]').fill("lots");
    await p.locator('form.filters button[type="submit"]').click();
    await p.locator('p.error:has-text("is not a size")').waitFor();
    await p.locator('input[name="min_size"]').fill("4M");
    await p.locator('form.filters button[type="submit"]').click();
    await p.waitForFunction(() => document.querySelectorAll("table.results tbody tr").length === 4);
    await done(p, "05-search");
  });

  test("filter builder: filters alone search, several types and a kind, columns sort on the server, the total shown", async () => {
    const p = await open(q({ view: "search" }));
    // No text: types and a kind alone.
    await p.locator('input[name="type"]').fill("nc, .FA");
    await p.locator('select[name="kind"]').selectOption("file");
    await p.locator('form.filters button[type="submit"]').click();
    await p.waitForURL(/kind=file/);
    await p.locator('.search p.muted.small:has-text("6 matches; sorted by size, descending")').waitFor();
    const names = async () => (await p.locator("table.results tbody td:first-child").allInnerTexts()).map((s) => s.trim());
    // Ties (2 MiB each) by path.
    assert.deepEqual(await names(), ["hg38.fa", "run-003.nc", "run-001.nc", "run-002.nc", "chr1.fa", "chr1.fa"]);
    // A column header sorts every match, not the page: the order is in the URL.
    await p.locator('table.results th button:has-text("Name")').click();
    await p.waitForURL(/sort=name/);
    await p.waitForFunction(() => document.querySelector("table.results tbody td")?.textContent?.trim() === "chr1.fa");
    assert.deepEqual(await names(), ["chr1.fa", "chr1.fa", "hg38.fa", "run-001.nc", "run-002.nc", "run-003.nc"]);
    assert.equal(await p.locator('table.results th:has(button:has-text("Name"))').getAttribute("aria-sort"), "ascending");
    await p.locator('table.results th button:has-text("Modified")').click();
    await p.waitForURL(/sort=mtime/);
    await p.waitForFunction(() => document.querySelector("table.results tbody td")?.textContent?.trim() === "run-003.nc");
    // Directories only, below one directory, with nothing else asked.
    await p.locator('input[name="type"]').fill("");
    await p.locator('select[name="kind"]').selectOption("dir");
    await p.locator('form.filters input[name="under"]').fill(`${stack.root}/projects/genomics`);
    await p.locator('form.filters button[type="submit"]').click();
    await p.waitForURL(/kind=dir/);
    await p.locator('.search p.muted.small:has-text("3 matches")').waitFor();
    assert.equal(await p.locator("table.results tbody tr.dir").count(), 3);
    await done(p, "05b-filter-builder");
  });

  test("query console: presets, a result sorted by any column, every row as CSV, TSV or Markdown, refusals explained", async () => {
    const p = await open("/");
    await p.locator('nav.tabs a:has-text("Console")').click();
    await p.waitForURL(/view=console/);
    await p.locator('select[aria-label="Preset"] option:has-text("Sizes of the top-level directories")').waitFor({ state: "attached" });
    await p.locator('select[aria-label="Preset"]').selectOption({ label: "Sizes of the top-level directories" });
    await p.waitForURL(/sql=/);
    await p.locator('table[aria-label="Console result"] tbody tr').nth(2).waitFor();
    const firstColumn = async () => (await p.locator('table[aria-label="Console result"] tbody td:first-child').allInnerTexts()).map((s) => s.trim());
    assert.deepEqual(await firstColumn(), ["projects", "scratch", "home"]);
    assert.match(await p.locator('[data-testid="console-count"]').innerText(), /^3 rows/);
    // Sorting in the page: names up, then bytes by value.
    await p.locator('table[aria-label="Console result"] th button:has-text("name")').click();
    assert.deepEqual(await firstColumn(), ["home", "projects", "scratch"]);
    await p.locator('table[aria-label="Console result"] th button:has-text("files")').click();
    const files = (await p.locator('table[aria-label="Console result"] tbody td:nth-child(4)').allInnerTexts()).map(Number);
    assert.deepEqual(files, [...files].sort((a, b) => b - a));
    assert.equal(files.reduce((a, b) => a + b, 0), fixtureFiles());
    await p.screenshot({ path: join(SHOTS, "19-console-result.png"), fullPage: true });
    // Downloads have every row.
    const saved = async (label) => {
      const [download] = await Promise.all([p.waitForEvent("download"), p.locator(`button:has-text("${label}")`).click()]);
      return [download.suggestedFilename(), readFileSync(await download.path(), "utf8")];
    };
    const [mdName, md] = await saved("Download Markdown");
    assert.equal(mdName, "console-cluster-3.md");
    const lines = md.trim().split("\n");
    assert.match(lines[0], /^\| name \| bytes \| allocated \| files \| dirs \| newest\\_change \|$/);
    assert.match(lines[1], /^\| --- \| ---: \|/);
    assert.equal(lines.length, 5, md);
    const [, csv] = await saved("Download CSV");
    assert.equal(csv.split("\r\n")[0], "name,bytes,allocated,files,dirs,newest_change");
    const [, tsv] = await saved("Download TSV");
    assert.equal(tsv.trim().split("\n").length, 4);
    // Names are text, never markup.
    await p.locator('textarea[aria-label="SQL"]').fill("SELECT name, size FROM entries WHERE snapshot_id = 3 AND name LIKE '%<img%'");
    await p.locator('.console button[type="submit"]').click();
    await p.waitForFunction((name) => document.querySelector('table[aria-label="Console result"] tbody td')?.textContent === name, HTML_FILE);
    assert.match(await p.locator('[data-testid="console-count"]').innerText(), /^1 row\b/);
    assert.equal(await p.evaluate(() => window.__xss), undefined);
    // A statement the console refuses says why.
    await p.locator('textarea[aria-label="SQL"]').fill("DROP TABLE entries");
    await p.locator('textarea[aria-label="SQL"]').press("Control+Enter");
    await p.locator('p.error:has-text("SELECT statements only")').waitFor();
    await p.screenshot({ path: join(SHOTS, "19-console.png"), fullPage: true });
    // The 400 is the expected answer to the DROP; nothing else failed.
    assert.deepEqual(
      p.problems().filter((m) => !m.includes("status of 400")),
      [],
    );
    assert.equal(p.problems().length, 1);
    await p.close();
  });

  test("opens reports: users with exact sizes, a sortable table, stale data as CSV", async () => {
    const p = await open("/");
    await p.locator('nav.tabs a:has-text("Reports")').click();
    await p.locator('nav.subtabs a:has-text("Users")').click();
    await p.waitForURL(/report=users/);
    await p.locator("table.usage tbody tr").first().waitFor();
    const rows = await p.locator("table.usage tbody tr").evaluateAll((trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent.trim())));
    const byName = Object.fromEntries(rows.map((r) => [r[0], r]));
    assert.ok(byName.nobody, JSON.stringify(rows));
    assert.ok(byName["uid 4242"], JSON.stringify(rows));
    // nobody owns genomics and alice's home: 48 + 12 MiB + 8,000 + 7 MiB + 3,100 + 1,234 bytes.
    const nobody = fixtureBytes(([, , uid]) => uid === 65534);
    assert.equal(nobody, 67 * MiB + 8_000 + 3_100 + 1_234);
    assert.match(byName.nobody[1], /^67\.0 MiB/);
    // Sorting announces itself and marks the column.
    await p.locator('table.usage th button:has-text("Files")').click();
    assert.equal(await p.locator('table.usage th:has(button:has-text("Files"))').getAttribute("aria-sort"), "descending");
    await p.waitForFunction(() => document.getElementById("announce")?.textContent === "sorted by Files, descending");
    await p.screenshot({ path: join(SHOTS, "06-report-users.png"), fullPage: true });

    await p.locator('nav.subtabs a:has-text("Stale data")').click();
    await p.locator('input[name="days"]').fill("365");
    // At least 1 KiB: not the 100-byte logs (the test "2-stale-csv-complete" downloads those).
    await p.locator('form[aria-label="Stale data"] input[name="min_size"]').fill("1K");
    await p.locator('form[aria-label="Stale data"] button[type="submit"]').click();
    await p.waitForURL(/days=365/);
    await p.waitForFunction(() => document.querySelectorAll("table.entries tbody tr").length === 5);
    const paths = await p.locator("table.entries tbody td.path").allInnerTexts();
    assert.ok(paths[0].endsWith("scratch/old-run.tar"), paths.join("\n"));
    const [download] = await Promise.all([p.waitForEvent("download"), p.locator('button:has-text("Download CSV")').click()]);
    assert.match(download.suggestedFilename(), /^stale-cluster-\d{4}-\d\d-\d\d-atime-365d\.csv$/);
    const csv = readFileSync(await download.path(), "utf8").trim().split("\n");
    assert.equal(csv.length, 6, csv.join("\n"));
    assert.match(csv[0], /path/);
    assert.ok(csv.some((line) => line.includes("old-run.tar")));
    await done(p, "07-report-stale");
  });

  test("reports file categories with their largest types, and colours the treemap by category", async () => {
    const p = await open(q({ view: "reports", report: "categories" }));
    await p.locator("table.usage tbody tr").first().waitFor();
    assert.equal(await p.locator('nav.subtabs [aria-current="page"]').innerText(), "File categories");
    const rows = await p.locator("table.usage tbody tr").evaluateAll((trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent.trim())));
    const byName = Object.fromEntries(rows.map((r) => [r[0], r]));
    // reads.fastq.gz (48 MiB) and old-run.tar (20 MiB) are archives; the 24 .h5, three .nc and hg38.fa scientific.
    assert.equal(fixtureBytes(([rel]) => /\.(gz|tar)$/.test(rel)), 68 * MiB);
    assert.match(byName.archives[1], /^68\.0 MiB/, JSON.stringify(rows));
    assert.equal(byName.archives[4], ".gz 48.0 MiB, .tar 20.0 MiB");
    const scientific = fixtureBytes(([rel]) => /\.(h5|nc|fa|fai)$/.test(rel));
    assert.equal(byName.scientific[3], String(fixtureFiles(([rel]) => /\.(h5|nc|fa|fai)$/.test(rel))));
    assert.equal(rows[0][0], "scientific", "the largest first");
    assert.ok(scientific > 68 * MiB);
    assert.equal(byName.logs[3], String(STALE_LOGS));
    assert.ok(byName.other, "core.12345, .bashrc and the rest");
    // The type report names each type's category.
    const types = await open(q({ view: "reports", report: "types" }));
    await types.locator("table.usage tbody tr").first().waitFor();
    const typeRows = await types.locator("table.usage tbody tr").evaluateAll((trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent.trim())));
    assert.deepEqual(typeRows.find((r) => r[0] === ".h5")?.[1], "scientific");
    await types.close();

    const t = await open(q({ path: `${stack.root}/projects/climate`, color: "category" }));
    await t.locator('.treemap g.cell.file[data-name="run-001.nc"]').first().waitFor();
    assert.equal(await t.locator('.treemap g.cell.file[data-name="run-001.nc"] rect').getAttribute("fill"), "#f28e2b");
    assert.equal(await t.locator('.treemap g.cell.file[data-name="step-23.h5"] rect').getAttribute("fill"), "#f28e2b");
    const legend = await t.locator(".treemap ul.legend li").allInnerTexts();
    assert.ok(legend.some((l) => l.startsWith("scientific")), legend.join("|"));
    await done(t, "06c-treemap-category");
    await done(p, "06b-report-categories");
  });

  test("reports duplicate files: confirmed copies linked to their directories, and the bytes they waste", async () => {
    const p = await open(q({ view: "reports", report: "duplicates" }));
    await p.locator("table.duplicates tbody tr").first().waitFor();
    assert.equal(await p.locator('nav.subtabs [aria-current="page"]').innerText(), "Duplicates");
    // chr1.fa twice (2 MiB written whole); run-002.nc has their size and other bytes.
    const summary = await p.locator('[data-testid="duplicates-summary"]').innerText();
    assert.match(summary, /^1 group of identical files \(2 files\) waste 2\.00 MiB on disk/, summary);
    assert.match(summary, /Every candidate is verified/, summary);
    const row = await p.locator("table.duplicates tbody tr").first().evaluate((tr) => [...tr.children].map((td) => td.textContent.trim()));
    assert.deepEqual(row.slice(0, 3), ["2.00 MiB", "2", "2.00 MiB"]);
    const copies = await p.locator("table.duplicates td.copies a").allInnerTexts();
    const ref = `${stack.root}/projects/genomics/ref`;
    assert.deepEqual(copies, [`${ref}/backup/chr1.fa`, `${ref}/chr1.fa`]);
    await p.locator("table.wasted-dir tbody tr").first().waitFor();
    await p.locator("table.wasted-user tbody tr").first().waitFor();
    const dirs = await p.locator("table.wasted-dir tbody tr").evaluateAll((trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent.trim())));
    assert.deepEqual(dirs, [[ref, "1", "2.00 MiB"]]);
    assert.equal((await p.locator("table.wasted-user tbody td").first().innerText()).trim(), "uid 4242");
    await p.screenshot({ path: join(SHOTS, "06d-report-duplicates.png"), fullPage: true });
    // Candidates that only share a size.
    await p.locator('select[name="status"]').selectOption("false_positive");
    await p.waitForURL(/status=false_positive/);
    await p.locator('table.duplicates td.copies a:has-text("run-002.nc")').waitFor();
    // A copy's link opens its directory.
    await p.locator('select[name="status"]').selectOption("confirmed");
    await p.locator(`table.duplicates td.copies a:has-text("backup/chr1.fa")`).click();
    await p.waitForURL(/view=explorer/);
    await p.locator('.crumbs [aria-current]:has-text("backup")').waitFor();
    await p.locator('table.children tbody td.name-cell:has-text("chr1.fa")').waitFor();
    await done(p, "06e-duplicate-opened");
  });

  test("treemap by bytes on disk, directories coloured by what dominates them, a pinned hover panel, full screen", async () => {
    const p = await open(q({ color: "category" }));
    await p.locator(".treemap svg g.cell.d1").first().waitFor();
    // Drawn two levels deep: climate's files are scientific, genomics' largest are an archive.
    assert.equal(await p.locator('.treemap g.cell.d2[data-name="climate"] > rect').getAttribute("fill"), "#f28e2b");
    assert.equal(await p.locator('.treemap g.cell.d2[data-name="genomics"] > rect').getAttribute("fill"), "#b07aa1");
    // On disk, the sparse files have no area: genomics (its two written copies) outweighs climate.
    await p.locator('select[name="size"]').selectOption("allocated");
    await p.waitForURL(/size=allocated/);
    await p.waitForFunction(() => {
      const area = (name) => {
        const r = document.querySelector(`.treemap g.cell.d2[data-name="${name}"] > rect`);
        return r ? Number(r.getAttribute("width")) * Number(r.getAttribute("height")) : 0;
      };
      return area("genomics") > 4 * area("climate");
    });
    // Hover shows a panel; a right-click pins it, so hovering elsewhere leaves it.
    const projects = p.locator('.treemap g.cell.d1[data-name="projects"] > rect');
    await projects.hover({ position: { x: 5, y: 5 } });
    await p.locator('[data-testid="treemap-hover"] code').filter({ hasText: `${stack.root}/projects` }).waitFor();
    await projects.click({ button: "right", position: { x: 5, y: 5 } });
    await p.locator('[data-testid="treemap-hover"].pinned').waitFor();
    await p.locator('.treemap g.cell.d1[data-name="home"] > rect').hover({ position: { x: 5, y: 5 } });
    const panel = await p.locator('[data-testid="treemap-hover"]').innerText();
    assert.match(panel, new RegExp(`${stack.root}/projects`));
    assert.match(panel, /on disk/);
    assert.match(panel, /of this directory \(on disk\)/);
    await p.screenshot({ path: join(SHOTS, "17-treemap-on-disk-pinned.png"), fullPage: true });
    await p.locator('[data-testid="treemap-hover"] button:has-text("unpin")').click();
    await p.locator('[data-testid="treemap-hover"].pinned').waitFor({ state: "detached" });
    await p.locator('button:has-text("Full screen")').click();
    await p.waitForFunction(() => document.fullscreenElement?.classList.contains("treemap"));
    await p.locator('button:has-text("Exit full screen")').click();
    await p.waitForFunction(() => document.fullscreenElement === null);
    await done(p, "17b-treemap-full-screen");
  });

  test("explorer: rows expand in place, bars relative to a reference directory, sizes coloured from thresholds", async () => {
    const p = await open(q({ path: `${stack.root}/projects`, treemap: "off" }));
    await p.locator('table.children tbody tr.dir').first().waitFor();
    await p.locator('button[aria-label="Expand climate"]').click();
    await p.locator('table.children tr.nested td.name-cell:has-text("run-003.nc")').waitFor();
    assert.equal(await p.locator('button[aria-label="Collapse climate"]').getAttribute("aria-expanded"), "true");
    await p.locator('table.children tr.nested button[aria-label="Expand output"]').click();
    await p.locator('table.children tr.nested[data-level="2"] td.name-cell:has-text("step-23.h5")').waitFor();
    // The whole snapshot as the reference: projects' children are a share of it.
    const top = await open(q({ treemap: "off" }));
    await top.locator('a:has-text("use it as the reference")').click();
    await top.waitForURL(/ref=/);
    await top.locator('table.children tbody td.name-cell a:has-text("projects")').click();
    await top.locator('[data-testid="reference"]').waitFor();
    const entry = async (path) => (await (await fetch(`${stack.url}/api/v1/snapshots/3/entry?${new URLSearchParams({ path })}`)).json()).bytes;
    const climate = await entry(`${stack.root}/projects/climate`);
    const all = await entry(stack.root);
    const pct = (await top.locator('table.children tbody tr:has(a:text-is("climate")) td.size .pct').innerText()).trim();
    const share = (100 * climate) / all;
    assert.equal(pct, share >= 10 ? `${share.toFixed(0)}%` : `${share.toFixed(1)}%`, "climate's share of the reference, the root");
    // Thresholds: 10M warns, 60M alerts (climate holds about 70 MiB, genomics 64 MiB).
    await top.locator('input[name="warn"]').fill("10M");
    await top.locator('input[name="alert"]').fill("66M");
    await top.locator('table.children tr:has(a:text-is("climate")) td.size.sev-alert').waitFor();
    await top.locator('table.children tr:has(a:text-is("genomics")) td.size.sev-warn').waitFor();
    await top.reload();
    assert.equal(await top.locator('input[name="alert"]').inputValue(), "66M", "kept in this browser");
    await top.locator('input[name="warn"]').fill("lots");
    await top.locator('.toolbar.scale .error:has-text("is not a size")').waitFor();
    await top.locator('input[name="warn"]').fill("1T");
    await top.locator('input[name="alert"]').fill("10T");
    await done(top, "18-explorer-reference-thresholds");
    await done(p, "18b-explorer-expanded");
  });

  test("compares two snapshots: growth per directory and owner, with drill-down", async () => {
    const p = await open(q({ view: "compare" }));
    await p.locator("table.changes tbody tr").first().waitFor();
    assert.equal(await p.locator('select[name="from"]').inputValue(), "2");
    const changes = await p.locator("table.changes tbody tr").evaluateAll((trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent.trim())));
    const byName = Object.fromEntries(changes.map((r) => [r[0], r]));
    assert.equal(byName.projects[1], "changed");
    assert.equal(byName.projects[4], "+8.00 MiB");
    assert.equal(byName.scratch[4], "-4.00 MiB");
    await p.locator('table.changes a:has-text("projects")').click();
    await p.locator('table.changes a:has-text("climate")').click();
    await p.waitForURL(/path=.*%2Fclimate(&|$)/);
    await p.locator('table.changes tbody tr.added:has-text("run-003.nc")').waitFor();
    const owners = await p.locator("table.owners tbody tr").first().innerText();
    // root gained run-003.nc (8 MiB) and lost scratch/tmp-1 (4 MiB and its directory's 4 KiB).
    assert.match(owners, /root/);
    assert.match(owners, /\+4\.00 MiB/);
    await p.locator("table.history tbody tr").nth(1).waitFor();
    await done(p, "08-compare");
  });

  test("shows file names with HTML in them as text, never as markup", async () => {
    const p = await open(q({ path: `${stack.root}/home/alice` }));
    const cell = p.locator("table.children tbody td.name-cell", { hasText: HTML_FILE });
    await cell.waitFor();
    assert.equal((await cell.innerText()).trim(), HTML_FILE);
    const home = await open(q({ path: `${stack.root}/home` }));
    await home.locator("table.children tbody td.name-cell", { hasText: HTML_DIR }).waitFor();
    await home.locator(`.treemap g.cell[data-name="${HTML_DIR}"]`).first().waitFor();
    const s = await open(q({ view: "search", q: "onerror" }));
    await s.locator("table.results tbody tr").first().waitFor();
    assert.equal((await s.locator("table.results tbody td").first().innerText()).trim(), HTML_FILE);
    for (const page of [p, home, s]) {
      assert.equal(await page.evaluate(() => window.__xss), undefined, "a file name ran as code");
      assert.equal(await page.locator("main img, main svg[onload], main [onerror]").count(), 0);
    }
    await home.close();
    await s.close();
    await done(p, "09-html-name");
  });

  test("restores a linked view from its URL, and switches themes", async () => {
    const p = await open(q({ snapshot: 2, view: "reports", report: "types" }));
    await p.locator("table.usage tbody tr").first().waitFor();
    assert.equal(await p.locator(".picker select").inputValue(), "2");
    assert.equal(await p.locator('nav.tabs [aria-current="page"]').innerText(), "Reports");
    assert.equal(await p.locator('nav.subtabs [aria-current="page"]').innerText(), "File types");
    const types = await p.locator("table.usage tbody td:first-child").allInnerTexts();
    assert.ok(types.includes(".h5") && types.includes(".nc"), types.join(","));
    const before = await p.evaluate(() => document.documentElement.dataset.theme);
    await p.locator("button.theme").click();
    await p.waitForFunction((b) => document.documentElement.dataset.theme !== b, before);
    const after = await p.evaluate(() => document.documentElement.dataset.theme);
    await p.reload();
    await p.locator("table.usage tbody tr").first().waitFor();
    await p.waitForFunction((a) => document.documentElement.dataset.theme === a, after);
    if (after !== "dark") {
      await p.locator("button.theme").click();
    }
    await p.goto(`${stack.url}/`);
    await p.locator(".treemap svg g.cell.d1").first().waitFor();
    await done(p, "10-dark-theme");
  });

  test("asks for a token where tokens are required, asks again for a wrong one, and an admin token reads everything", async () => {
    const p = await newPage(browser.context);
    await p.goto(stack.guardedUrl);
    await p.locator("form.token").waitFor();
    await p.locator('form.token input[name="token"]').fill("not-a-token-0123456789abcdef");
    await p.locator('form.token button[type="submit"]').click();
    await p.locator('form.token p.error:has-text("not accepted")').waitFor();
    await p.locator('form.token input[name="token"]').fill(TOKENS.admin);
    await p.locator('form.token button[type="submit"]').click();
    await p.locator("table.children tbody tr.dir").first().waitFor();
    assert.deepEqual((await rowNames(p)).map((s) => s.trim()), ["projects", "scratch", "home"]);
    assert.equal(await p.locator(".picker select option").count(), 3);
    await p.screenshot({ path: join(SHOTS, "12-token-admin.png"), fullPage: true });
    // The answers before sign-in were 401s (the page then asked for the token); nothing else went wrong.
    assert.deepEqual(
      p.problems().filter((m) => !m.includes("status of 401")),
      [],
    );
    await p.close();
  });

  test("10-token-scoped: a scoped token lands on its own prefix, sees no admin tabs, and no request fails", async () => {
    const home = `${stack.root}/home/alice`;
    const l = await newPage(browser.context);
    await l.goto(stack.guardedUrl);
    await l.locator('form.token input[name="token"]').fill(TOKENS.leader);
    await l.locator('form.token button[type="submit"]').click();
    await l.locator('table.children tbody td.name-cell:has-text("thesis.pdf")').waitFor();
    // At the prefix, and nothing leads above it.
    assert.equal(await l.locator(".crumbs li").count(), 1);
    assert.equal(await l.locator(".crumbs [aria-current]").innerText(), home);
    assert.equal(await l.locator("table.children tr.up").count(), 0);
    assert.match(await l.locator('[data-testid="scope"]').innerText(), new RegExp(`reads only below ${home}`));
    // Only the snapshots that cover the prefix: the two of the whole tree, not the one of projects/.
    assert.deepEqual(await l.locator(".picker select option").evaluateAll((os) => os.map((o) => o.value)), ["3", "2"]);
    await l.locator(".treemap svg g.cell.d1").first().waitFor();
    await l.screenshot({ path: join(SHOTS, "13-token-scoped.png"), fullPage: true });
    // No query console for a scoped token.
    assert.equal(await l.locator('nav.tabs a:has-text("Console")').count(), 0);
    // Reports: only those below a directory.
    await l.locator('nav.tabs a:has-text("Reports")').click();
    await l.locator("table.entries tbody tr").first().waitFor();
    assert.deepEqual(
      (await l.locator("nav.subtabs a").allInnerTexts()).map((s) => s.trim()),
      ["Largest files", "Largest directories", "Stale data"],
    );
    // Compare: growth and history of the prefix, without growth per owner.
    await l.locator('nav.tabs a:has-text("Compare")').click();
    await l.locator("table.history tbody tr").nth(1).waitFor();
    await l.locator('p.muted:has-text("Nothing changed here.")').waitFor();
    assert.equal(await l.locator('section[aria-label="Growth per owner"]').count(), 0);
    // Above the prefix, and a whole-snapshot report: plain sentences, and no request is made.
    await l.goto(`${stack.guardedUrl}${q({ path: stack.root })}`);
    await l.locator('p.error:has-text("Your token reads only below")').waitFor();
    await l.locator(`p.error a:has-text("Go to ${home}")`).click();
    await l.locator('table.children tbody td.name-cell:has-text("thesis.pdf")').waitFor();
    await l.goto(`${stack.guardedUrl}${q({ view: "reports", report: "users" })}`);
    await l.locator('p.error:has-text("needs an administrator")').waitFor();
    const text = await l.locator("body").innerText();
    assert.doesNotMatch(text, /\b40\d\b|path=|give path/, text);
    await l.screenshot({ path: join(SHOTS, "13-token-scoped-admin-report.png"), fullPage: true });
    assert.deepEqual(
      l.problems().filter((m) => !m.includes("status of 401")),
      [],
      "a request failed after sign-in",
    );
    await l.close();
  });

  test("1-compare-other-root: offers only snapshots of the same label and root, and shows the scans' warnings", async () => {
    const p = await open(q({ view: "compare" }));
    await p.locator("table.changes tbody tr").first().waitFor();
    // #1 has the same label but another root (projects/): not offered.
    assert.deepEqual(await p.locator('select[name="from"] option').evaluateAll((os) => os.map((o) => o.value)), ["2"]);
    // #2 was scanned with an --exclude: the comparison and the history say so.
    await p.locator('ul.warnings[aria-label="About this comparison"] li').first().waitFor();
    await p.locator('ul.warnings[aria-label="About this history"] li').first().waitFor();
    await p.locator("table.history tbody tr").nth(1).waitFor();
    const history = await p.locator("table.history tbody tr").evaluateAll((trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent.trim())));
    assert.deepEqual(
      history.map((r) => r[0]),
      ["#2", "#3"],
    );
    assert.match(history[0].at(-1), /--exclude=\.snapshot/);
    await done(p, "14-compare-same-filesystem");

    // The snapshot of projects/ has nothing to compare with, and says so.
    const sub = await open(q({ view: "compare", snapshot: 1 }));
    await sub.locator('[data-testid="nothing-to-compare"]').waitFor();
    assert.match(await sub.locator('[data-testid="nothing-to-compare"]').innerText(), new RegExp(`at ${stack.root}/${SUB_ROOT} `));
    await sub.locator("table.history tbody tr").first().waitFor();
    assert.equal(await sub.locator("table.history tbody tr").count(), 1);
    assert.equal(await sub.locator("table.changes").count(), 0);
    await done(sub, "14-compare-nothing-comparable");

    // A link that asks for it anyway is refused in the page, with why, before any request.
    const mixed = await open(q({ view: "compare", snapshot: 3, from: 1 }));
    await mixed.locator('p.error:has-text("not of the same filesystem")').waitFor();
    assert.equal(await mixed.locator("table.changes").count(), 0);
    await done(mixed, "14-compare-refused");
  });

  test("2-stale-csv-complete: the CSV holds every stale row, and a download cut short saves nothing", async () => {
    const p = await open(q({ view: "reports", report: "stale", days: 365 }));
    // More rows than a page of the table.
    await p.waitForFunction(() => document.querySelectorAll("table.entries tbody tr").length === 100);
    const [download] = await Promise.all([p.waitForEvent("download"), p.locator('button:has-text("Download CSV")').click()]);
    const lines = readFileSync(await download.path(), "utf8").trim().split("\n");
    const header = lines[0].split(",");
    assert.ok(header.includes("path") && header.includes("path_b64"), lines[0]);
    // The 100-byte logs and the five large stale files: every row, none twice.
    assert.equal(lines.length - 1, STALE_LOGS + 5, `${lines.length - 1} rows`);
    const logs = lines.filter((l) => l.includes("/scratch/logs/job-"));
    assert.equal(new Set(logs).size, STALE_LOGS);
    assert.deepEqual(logs, [...logs].sort(), "rows in path order");
    await done(p, "15-stale-csv-complete");

    // The same download through a proxy that cuts the body short: an error, and no file.
    const proxy = await cuttingProxy(stack.url, (url) => url.includes("/stale?") && url.includes("format=csv"));
    try {
      const c = await newPage(browser.context);
      let downloads = 0;
      c.on("download", () => downloads++);
      await c.goto(`${proxy.url}${q({ view: "reports", report: "stale", days: 365 })}`);
      await c.waitForFunction(() => document.querySelectorAll("table.entries tbody tr").length === 100);
      await c.locator('button:has-text("Download CSV")').click();
      const failed = c.locator('[data-testid="download-failed"]');
      await failed.waitFor();
      assert.match(await failed.innerText(), /^The download was cut short: .*Nothing was saved; try again\.$/);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(downloads, 0, "a partial file was saved");
      await c.screenshot({ path: join(SHOTS, "15-stale-csv-cut-short.png"), fullPage: true });
      // The cut itself is the only failure.
      assert.deepEqual(
        c.problems().filter((m) => !/format=csv|ERR_INCOMPLETE_CHUNKED_ENCODING|ERR_CONNECTION|ERR_EMPTY_RESPONSE/.test(m)),
        [],
      );
      await c.close();
    } finally {
      await proxy.close();
    }
  });

  test("3-ignore-case: matches case-insensitively on request, for substring, glob and regex", async () => {
    const p = await open(q({ view: "search", q: "RUN-" }));
    await p.locator('p.muted:has-text("Nothing matches.")').waitFor();
    await p.locator('input[name="ignore_case"]').check();
    await p.locator('form.filters button[type="submit"]').click();
    await p.waitForURL(/ignore_case=true/);
    await p.waitForFunction(() => document.querySelectorAll("table.results tbody tr").length === 3);
    const names = (await p.locator("table.results tbody td:first-child").allInnerTexts()).map((s) => s.trim());
    assert.deepEqual(names, ["run-003.nc", "run-001.nc", "run-002.nc"]);
    // The toggle is in the URL: a reload keeps it.
    await p.reload();
    await p.waitForFunction(() => document.querySelectorAll("table.results tbody tr").length === 3);
    assert.equal(await p.locator('input[name="ignore_case"]').isChecked(), true);
    await done(p, "16-search-ignore-case");
    for (const [text, match] of [
      ["*.NC", "glob"],
      ["^RUN-\\d+\\.NC$", "regex"],
      ["(?i)RUN-", "regex"],
    ]) {
      const s = await open(q({ view: "search", q: text, match, ignore_case: "true" }));
      await s.waitForFunction(() => document.querySelectorAll("table.results tbody tr").length === 3);
      await s.close();
    }
  });

  test("says what was wrong for a path outside the snapshot or a bad parameter", async () => {
    const p = await open(q({ path: "/no/such/place" }));
    await p.locator('p.error:has-text("is not in snapshot")').waitFor();
    await p.locator('p.error a:has-text("Go to")').click();
    await p.locator("table.children tbody tr").first().waitFor();
    const s = await open(q({ view: "search", q: "(", match: "regex" }));
    await s.locator("p.error").waitFor();
    // In the API's words, without the status code.
    assert.match(await s.locator("p.error").innerText(), /^q is not a valid regular expression/);
    // The 400 response itself is logged by Chromium; it is the expected answer here.
    await s.screenshot({ path: join(SHOTS, "11-bad-input.png"), fullPage: true });
    await s.close();
    await done(p, "11-outside");
  });
});

describe("API types", () => {
  test("src/api.gen.ts is what the OpenAPI document served by storage-api generates", async () => {
    const doc = await (await fetch(`${stack.url}/api/v1/openapi.json`)).json();
    assert.equal(
      readFileSync(API_TYPES, "utf8"),
      generate(doc),
      "src/api.gen.ts is not the API's document: run `npm run api-types -- URL` with the URL of a storage-api's /api/v1/openapi.json, then `npm run build` to check the UI against it",
    );
  });
});

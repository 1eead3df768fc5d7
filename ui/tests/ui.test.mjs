// Browser tests of the web UI: Debian's Chromium (through playwright-core) against storage-api,
// storage-aggregator and ClickHouse, on a fixture scanned twice. Each test saves a screenshot in
// $STORAGE_TRACKER_SCREENSHOTS (default .work/test/screenshots) and requires a page without
// console errors, failed requests or exceptions (a Content Security Policy violation is one).
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { launch, page as newPage } from "./browser.mjs";
import { HTML_DIR, HTML_FILE, REPO, TOKENS, fixtureBytes, startStack } from "./stack.mjs";

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

describe("web UI", () => {
  test("loads the latest snapshot: explorer, treemap and snapshot picker", async () => {
    const p = await open("/");
    await p.locator("table.children tbody tr.dir").first().waitFor();
    const names = (await rowNames(p)).map((s) => s.trim());
    // Largest first: projects (~92 MiB) before scratch (29 MiB) and home.
    assert.deepEqual(names, ["projects", "scratch", "home"]);
    assert.equal(await p.locator(".crumbs [aria-current]").innerText(), stack.root);
    const options = await p.locator(".picker select option").allInnerTexts();
    assert.equal(options.length, 2);
    assert.match(await p.locator(".picker select").inputValue(), /^2$/);
    await p.locator(".treemap svg g.cell.d1").first().waitFor();
    // Three directories, each with its two largest children.
    assert.equal(await p.locator(".treemap svg g.cell").count(), 9);
    const summary = await p.locator("p.summary").innerText();
    assert.match(summary, new RegExp(`in ${37} files`), summary);
    // The directory as an ncdu export.
    const [download] = await Promise.all([p.waitForEvent("download"), p.locator('button:has-text("export for ncdu")').click()]);
    assert.equal(download.suggestedFilename(), "ncdu-cluster-2.json");
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

  test("compares two snapshots: growth per directory and owner, with drill-down", async () => {
    const p = await open(q({ view: "compare" }));
    await p.locator("table.changes tbody tr").first().waitFor();
    assert.equal(await p.locator('select[name="from"]').inputValue(), "1");
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
    const p = await open(q({ snapshot: 1, view: "reports", report: "types" }));
    await p.locator("table.usage tbody tr").first().waitFor();
    assert.equal(await p.locator(".picker select").inputValue(), "1");
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

  test("asks for a token where tokens are required, and a scoped token reads only its prefix", async () => {
    const p = await newPage(browser.context);
    await p.goto(stack.guardedUrl);
    await p.locator("form.token").waitFor();
    await p.locator('form.token input[name="token"]').fill(TOKENS.admin);
    await p.locator('form.token button[type="submit"]').click();
    await p.locator("table.children tbody tr.dir").first().waitFor();
    assert.deepEqual((await rowNames(p)).map((s) => s.trim()), ["projects", "scratch", "home"]);
    await p.screenshot({ path: join(SHOTS, "12-token-admin.png"), fullPage: true });
    // The first answer was a 401 (the page then asked for the token); nothing else went wrong.
    assert.deepEqual(
      p.problems().filter((m) => !m.includes("status of 401")),
      [],
    );
    await p.close();

    // A group leader's token: the root is refused with what the token may read; the prefix opens.
    const l = await newPage(browser.context);
    await l.goto(stack.guardedUrl);
    await l.locator('form.token input[name="token"]').fill(TOKENS.leader);
    await l.locator('form.token button[type="submit"]').click();
    await l.locator('p.error:has-text("403")').first().waitFor();
    assert.match(await l.locator("p.error").first().innerText(), /home\/alice/);
    await l.goto(`${stack.guardedUrl}${q({ path: `${stack.root}/home/alice` })}`);
    await l.locator('table.children tbody td.name-cell:has-text("thesis.pdf")').waitFor();
    await l.screenshot({ path: join(SHOTS, "13-token-scoped.png"), fullPage: true });
    await l.close();
  });

  test("says what was wrong for a path outside the snapshot or a bad parameter", async () => {
    const p = await open(q({ path: "/no/such/place" }));
    await p.locator('p.error:has-text("is not in snapshot")').waitFor();
    await p.locator('p.error a:has-text("Go to")').click();
    await p.locator("table.children tbody tr").first().waitFor();
    const s = await open(q({ view: "search", q: "(", match: "regex" }));
    await s.locator("p.error").waitFor();
    assert.match(await s.locator("p.error").innerText(), /^400: q is not a valid regular expression/);
    // The 400 response itself is logged by Chromium; it is the expected answer here.
    await s.screenshot({ path: join(SHOTS, "11-bad-input.png"), fullPage: true });
    await s.close();
    await done(p, "11-outside");
  });
});

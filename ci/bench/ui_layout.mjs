#!/usr/bin/env node
// Treemap layout time in the browser (the Web Worker's own measure, shown under the treemap),
// squarified against Voronoi, for 1 to 3 levels of a snapshot's root, in Debian's Chromium.
//
//   node ci/bench/ui_layout.mjs BASE_URL SNAPSHOT [RUNS]
//
// BASE_URL is a storage-api serving the built UI (--ui-dir ui/dist).
import { launch, page } from "../../ui/tests/browser.mjs";

const [base, snapshot, runsArg] = process.argv.slice(2);
if (!base || !snapshot) {
  console.error("usage: node ci/bench/ui_layout.mjs BASE_URL SNAPSHOT [RUNS]");
  process.exit(2);
}
const runs = Number(runsArg ?? 5);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const browser = await launch();
const rows = [];
try {
  for (const layout of ["squarified", "voronoi"]) {
    for (const depth of [1, 2, 3]) {
      const times = [];
      let tiles = 0;
      for (let i = 0; i < runs; i++) {
        const p = await page(browser.context);
        const t0 = Date.now();
        await p.goto(`${base}/?${new URLSearchParams({ snapshot, layout, depth: String(depth) })}`);
        const label = p.locator('[data-testid="layout-time"]');
        await p.waitForFunction(() => /laid out in/.test(document.querySelector('[data-testid="layout-time"]')?.textContent ?? ""), null, { timeout: 600_000 });
        const text = await label.innerText();
        const [, n, ms] = /(\d+) tiles?, laid out in (\d+) ms/.exec(text);
        tiles = Number(n);
        times.push({ layout: Number(ms), page: Date.now() - t0 });
        await p.close();
      }
      rows.push([layout, depth, tiles, median(times.map((t) => t.layout)), Math.max(...times.map((t) => t.layout)), median(times.map((t) => t.page))]);
    }
  }
} finally {
  await browser.close();
}
console.log("| layout | levels | tiles | layout median ms | layout max ms | page to picture median ms |");
console.log("|---|---:|---:|---:|---:|---:|");
for (const r of rows) console.log(`| ${r.join(" | ")} |`);

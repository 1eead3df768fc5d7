// Debian's Chromium, driven by playwright-core (which downloads no browser of its own).
import { mkdtempSync, rmSync } from "node:fs";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.STORAGE_TRACKER_CHROMIUM ?? "/usr/bin/chromium";

/** Starts a headless Chromium with a fresh profile; `close()` stops it and removes the profile. */
export async function launch() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: run ci/install-deps.sh (apt package chromium) or set STORAGE_TRACKER_CHROMIUM`);
  }
  const profile = mkdtempSync(join(tmpdir(), "st-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1360, height: 900 },
    acceptDownloads: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * A new page that records every console error, failed request and uncaught exception:
 * `problems()` lists them, so a test can require a clean page (a CSP violation shows up here).
 */
export async function page(context) {
  const p = await context.newPage();
  const seen = [];
  p.on("console", (m) => {
    if (m.type() === "error") seen.push(`console: ${m.text()}`);
  });
  p.on("pageerror", (e) => seen.push(`page error: ${e.message}`));
  p.on("requestfailed", (r) => {
    // A view that moves on cancels the requests it no longer needs.
    if (r.failure()?.errorText !== "net::ERR_ABORTED") seen.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
  });
  p.problems = () => [...seen];
  return p;
}

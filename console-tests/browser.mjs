// Headless Debian Chromium through playwright-core (no browser download).
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

/** A browser context in a fresh profile (a new temporary --user-data-dir). */
export async function launch(viewport = DESKTOP) {
  const executablePath = process.env.KRAKE_CHROMIUM || "/usr/bin/chromium";
  const userDataDir = mkdtempSync(join(tmpdir(), "krake-console-chromium-"));
  return chromium.launchPersistentContext(userDataDir, {
    executablePath,
    viewport,
    headless: true,
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
}

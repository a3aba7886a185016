// The console's browser scenarios, driven by krake-server/tests/console.rs:
//
//   node console-tests/run.mjs <settings.json>
//
// settings: {url, token, kubeconfig (a JSON file), restricted: {url, token},
// screenshots (a folder)}. Prints one line per step and exits non-zero on the
// first failure (with a screenshot of the page as it was).
import { readFileSync, writeFileSync, mkdirSync, rmSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { launch, DESKTOP, PHONE } from "./browser.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const { dump } = await import(join(here, "../krake-server/console/yaml.js"));
const settings = JSON.parse(readFileSync(process.argv[2], "utf8"));
mkdirSync(settings.screenshots, { recursive: true });
rmSync(join(settings.screenshots, "failure.png"), { force: true });
const TIMEOUT = 30_000;

// Asks the Rust test to do something (a line on stdout) and waits for its
// answer (a line on stdin).
const input = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function ask(command) {
  console.log(command);
  const { value, done } = await input.next();
  if (done || value !== "done") throw new Error(`${command}: the test answered ${value}`);
}

let passed = 0;
let current = null;
async function step(name, body) {
  const started = Date.now();
  try {
    await body();
    passed++;
    console.log(`ok - ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    console.log(`not ok - ${name}: ${error.stack || error}`);
    if (current) {
      await current.screenshot({ path: join(settings.screenshots, "failure.png"), fullPage: true }).catch(() => {});
      console.log(`page text:\n${await current.locator("body").innerText().catch(() => "?")}`);
    }
    throw error;
  }
}

async function shoot(page, name) {
  for (const [size, viewport] of [["desktop", DESKTOP], ["phone", PHONE]]) {
    await page.setViewportSize(viewport);
    await page.waitForTimeout(100);
    await page.screenshot({ path: join(settings.screenshots, `${name}-${size}.png`), fullPage: true });
  }
  await page.setViewportSize(DESKTOP);
}

function deployment(name, extra = {}) {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, ...extra },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: { containers: [{ name: "web", image: "nginx:1.27", ports: [{ containerPort: 80 }] }] },
      },
    },
  };
}

async function signIn(page, url, token, user) {
  await page.goto(`${url}/console/`);
  await page.getByLabel("Bearer token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText(`Signed in as ${user}`).waitFor({ timeout: TIMEOUT });
}

const context = await launch(DESKTOP);
const problems = [];
try {
  const page = await context.newPage();
  current = page;
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    // Refusals (4xx) are expected, and so are broken connections while the
    // server restarts; anything else the page logs as an error is a failure.
    const expected = /status of 4\d\d|net::ERR_(INCOMPLETE_CHUNKED_ENCODING|CONNECTION_REFUSED|CONNECTION_RESET|EMPTY_RESPONSE|CONNECTION_CLOSED)/;
    if (message.type() === "error" && !expected.test(message.text())) problems.push(`console error: ${message.text()}`);
  });
  page.on("dialog", (dialog) => dialog.accept());

  await step("the sign-in page", async () => {
    await page.goto(`${settings.url}/console/`);
    await page.screenshot({ path: join(settings.screenshots, "sign-in-desktop.png") });
    await page.setViewportSize(PHONE);
    await page.screenshot({ path: join(settings.screenshots, "sign-in-phone.png") });
    await page.setViewportSize(DESKTOP);
    await page.getByRole("heading", { name: "Sign in to Krake" }).waitFor();
  });

  await step("sign in with a token", async () => {
    await page.getByLabel("Bearer token").fill(settings.token);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText(`Signed in as ${settings.user}`).waitFor();
    await page.getByRole("heading", { name: "Overview" }).waitFor();
    await page.locator("#connection.live").waitFor();
    // The cluster the test registered through the API is listed.
    await page.locator("#clusters").getByRole("link", { name: "b", exact: true }).waitFor();
  });

  await step("register a cluster from a kubeconfig (YAML) and see it go ONLINE", async () => {
    const kubeconfig = JSON.parse(readFileSync(settings.kubeconfig, "utf8"));
    const file = join(settings.screenshots, "..", "kubeconfig-a.yaml");
    writeFileSync(file, dump(kubeconfig));
    await page.getByRole("link", { name: "Register cluster" }).click();
    await page.getByLabel("Name", { exact: true }).fill("a");
    await page.getByLabel("Namespace", { exact: true }).selectOption(settings.namespace);
    await page.getByLabel("Kubeconfig file").setInputFiles(file);
    await page.getByLabel("Labels (optional)").fill("location=DE");
    await page.getByRole("button", { name: "Register" }).click();
    await page.getByRole("heading", { name: /^a in/ }).waitFor();
    await page.locator("#cluster-state").getByText("ONLINE").waitFor();
    await page.getByText("location=DE").waitFor();
    await shoot(page, "cluster");
  });

  await step("an invalid manifest's error is shown at the field", async () => {
    await page.getByRole("link", { name: "New application" }).click();
    await page.getByLabel("Name", { exact: true }).fill("web");
    await page.locator("#app-namespace").selectOption(settings.namespace);
    const broken = deployment("web");
    delete broken.apiVersion;
    await page.getByLabel("Manifest (YAML)").fill(dump(broken));
    await page.getByRole("button", { name: "Create" }).click();
    await page.locator("#app-manifest-error").getByText("Field 'apiVersion' not found").waitFor();
    if ((await page.locator("#app-manifest").getAttribute("aria-invalid")) !== "true") throw new Error("the manifest is not marked invalid");
    await shoot(page, "new-application-error");
  });

  await step("create an application from YAML and watch it become RUNNING without reloading", async () => {
    const service = { apiVersion: "v1", kind: "Service", metadata: { name: "web" }, spec: { type: "NodePort", selector: { app: "web" }, ports: [{ port: 80, targetPort: 80 }] } };
    await page.getByLabel("Manifest (YAML)").fill(`${dump(deployment("web"))}---\n${dump(service)}`);
    const navigations = [];
    page.on("framenavigated", (frame) => frame === page.mainFrame() && navigations.push(frame.url()));
    await page.getByRole("button", { name: "Create" }).click();
    await page.getByRole("heading", { name: /^web in/ }).waitFor();
    await page.locator("#app-state").getByText("RUNNING").waitFor();
    await page.getByRole("link", { name: /^web: 127\.0\.0\.1:\d+$/ }).waitFor();
    if (navigations.some((u) => !u.includes("#"))) throw new Error(`the page was reloaded: ${navigations}`);
    await page.getByRole("heading", { name: "Observer schema" }).waitFor();
    await shoot(page, "application");
  });

  await step("the overview shows it live", async () => {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Overview" }).click();
    const row = page.locator("#applications tr", { hasText: "web" });
    await row.getByText("RUNNING").waitFor();
    await page.locator("#recent li").first().waitFor();
    const text = await page.locator("main").innerText();
    if (/\[object |undefined|NaN/.test(text)) throw new Error(`garbage in the overview:\n${text}`);
    await shoot(page, "overview");
  });

  await step("a lost connection is shown, then resumed (the server restarted)", async () => {
    await page.evaluate(() => {
      window.sawLost = false;
      const el = document.getElementById("connection");
      new MutationObserver(() => {
        if (el.classList.contains("lost")) window.sawLost = true;
      }).observe(el, { attributes: true, childList: true, characterData: true, subtree: true });
    });
    await ask("@restart");
    await page.waitForFunction(() => window.sawLost);
    await page.locator("#connection.live").waitFor();
  });

  await step("edit the manifest: an error at the field, then saved", async () => {
    await page.locator("#applications").getByRole("link", { name: "web" }).click();
    await page.getByLabel("Manifest (YAML)").fill("- apiVersion: v1\n  kind: ConfigMap\n  metadata: {}\n");
    await page.getByRole("button", { name: "Save" }).click();
    await page.locator("#edit-manifest-error").getByText("metadata.name").waitFor();
    await page.getByLabel("Manifest (YAML)").fill(dump(deployment("web")));
    await page.getByRole("button", { name: "Save" }).click();
    await page.getByText("Manifest saved.").waitFor();
  });

  await step("delete it", async () => {
    await page.getByRole("button", { name: "Delete", exact: true }).click();
    await page.getByText("This application has been deleted.").waitFor();
  });

  // A user with one namespace: Krake with static authentication as that
  // user, RBAC, and a role that may read and create applications there
  // but not delete them.
  const restricted = settings.restricted;
  await step("a one-namespace user sees only that namespace", async () => {
    const page2 = await context.newPage();
    current = page2;
    page2.setDefaultTimeout(TIMEOUT);
    page2.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page2.on("dialog", (dialog) => dialog.accept());
    await signIn(page2, restricted.url, restricted.token, restricted.user);
    // "All namespaces" shows what the API lets the user list: only theirs.
    const options = (await page2.locator("#namespace option").allTextContents()).filter((o) => o !== "All namespaces");
    if (JSON.stringify(options) !== JSON.stringify([restricted.namespace])) throw new Error(`namespaces offered: ${options}`);
    await page2.locator("#applications").getByRole("link", { name: restricted.visible }).waitFor();
    if (await page2.locator("#applications").getByRole("link", { name: restricted.hidden }).count()) {
      throw new Error(`${restricted.hidden} of another namespace is shown`);
    }
    await shoot(page2, "overview-restricted");
  });

  await step("a refused action (403) gets a clear message", async () => {
    const page2 = current;
    await page2.locator("#applications").getByRole("link", { name: restricted.visible }).click();
    await page2.getByRole("button", { name: "Delete", exact: true }).click();
    await page2.getByText("Delete failed: You are not allowed to do this").waitFor();
    await shoot(page2, "application-refused");
  });

  if (problems.length) throw new Error(`errors in the page:\n${problems.join("\n")}`);
  console.log(`${passed} passed, 0 failed`);
  console.log("@end");
} catch (error) {
  console.log(String(error.message || error));
  if (problems.length) console.log(problems.join("\n"));
  process.exitCode = 1;
  console.log("@end");
} finally {
  await context.close();
}

// How the console's overview copes with a large installation: 1,000
// applications in 10 namespaces and 50 clusters, then 100 application
// changes per second through the watch stream for 10 s. The API is faked
// inside the browser (the console's own files are served from
// krake-server/console/), so only the console is measured.
//
//   node console-tests/bench.mjs [--apps 1000] [--clusters 50] [--rate 100] [--seconds 10]
//
// Prints the time from "Sign in" to the 1,000 rows on screen, and, under
// the change rate, the frame times (requestAnimationFrame deltas), the long
// tasks (> 50 ms) and how many changes reached the page.
import { readFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { launch, DESKTOP } from "./browser.mjs";

const { values } = parseArgs({
  options: {
    apps: { type: "string", default: "1000" },
    clusters: { type: "string", default: "50" },
    rate: { type: "string", default: "100" },
    seconds: { type: "string", default: "10" },
  },
});
const APPS = Number(values.apps);
const CLUSTERS = Number(values.clusters);
const RATE = Number(values.rate);
const SECONDS = Number(values.seconds);
const here = dirname(fileURLToPath(import.meta.url));
const assets = join(here, "../krake-server/console");
const ORIGIN = "http://krake.bench";
const TYPES = { js: "text/javascript", css: "text/css", html: "text/html", svg: "image/svg+xml" };

const clusters = Array.from({ length: CLUSTERS }, (_, i) => ({
  api: "kubernetes",
  kind: "Cluster",
  metadata: { name: `cluster-${i}`, namespace: `ns-${i % 10}`, labels: { location: i % 2 ? "DE" : "FR" }, uid: `c${i}` },
  spec: { kubeconfig: {}, metrics: [{ name: "load", weight: 1 }], custom_resources: [] },
  status: {
    state: "ONLINE",
    nodes: [0, 1, 2].map((n) => ({ metadata: { name: `node-${n}` }, status: { conditions: [{ type: "Ready", status: "True", reason: "", message: "" }] } })),
  },
}));
const apps = Array.from({ length: APPS }, (_, i) => ({
  api: "kubernetes",
  kind: "Application",
  metadata: { name: `app-${String(i).padStart(4, "0")}`, namespace: `ns-${i % 10}`, uid: `a${i}` },
  spec: { manifest: [], observer_schema: [], constraints: { cluster: {} }, hooks: [] },
  status: { state: "RUNNING", running_on: { name: `cluster-${i % CLUSTERS}`, namespace: `ns-${i % 10}` }, services: {} },
}));
const list = (kind, items) => JSON.stringify({ api: "kubernetes", kind: `${kind}List`, metadata: { resource_version: "7" }, items });

const context = await launch(DESKTOP);
try {
  const page = await context.newPage();
  await page.route(`${ORIGIN}/**`, async (route) => {
    const url = new URL(route.request().url());
    if (url.pathname === "/console/") return route.fulfill({ contentType: "text/html", body: readFileSync(join(assets, "index.html")) });
    if (url.pathname === "/console/config.json") return route.fulfill({ contentType: "application/json", body: "{}" });
    if (url.pathname.startsWith("/console/")) {
      const name = url.pathname.slice("/console/".length);
      return route.fulfill({ contentType: TYPES[name.split(".").pop()], body: readFileSync(join(assets, name)) });
    }
    if (url.pathname === "/me") return route.fulfill({ contentType: "application/json", body: JSON.stringify({ user: "bench", roles: [] }) });
    if (url.pathname === "/kubernetes/applications") return route.fulfill({ contentType: "application/json", body: list("Application", apps) });
    if (url.pathname === "/kubernetes/clusters") return route.fulfill({ contentType: "application/json", body: list("Cluster", clusters) });
    if (url.pathname === "/infrastructure/clouds") return route.fulfill({ contentType: "application/json", body: list("Cloud", []) });
    return route.fulfill({ status: 404, body: "{}" });
  });
  // Watches: streams made in the page (route.fulfill cannot stream). The
  // application watch sends RATE changes per second once window.benchStart()
  // is called; the others stay open and quiet.
  await page.addInitScript(({ apps, rate }) => {
    const states = ["RUNNING", "RECONCILING", "MIGRATING", "RUNNING", "FAILED"];
    const realFetch = window.fetch.bind(window);
    let begin = null;
    window.benchStarted = new Promise((resolve) => (begin = resolve));
    window.benchStart = () => begin();
    window.benchSent = 0;
    window.fetch = (input, init) => {
      const url = String(input);
      if (!url.includes("?watch")) return realFetch(input, init);
      const encoder = new TextEncoder();
      const body = new ReadableStream({
        async start(controller) {
          if (!url.includes("/applications")) return;
          await window.benchStarted;
          let n = 0;
          const tick = 10; // ms
          const t0 = performance.now();
          setInterval(() => {
            // Paced by the clock: late timers send what is due.
            const due = Math.floor((rate * (performance.now() - t0)) / 1000);
            let chunk = "";
            while (n < due) {
              const app = structuredClone(apps[(n * 7919) % apps.length]);
              app.status.state = states[n % states.length];
              app.status.reason = n % 5 === 4 ? { code: "RESOURCE_ERROR", message: `change ${n}` } : null;
              chunk += `${JSON.stringify({ type: "MODIFIED", object: app })}\n`;
              n++;
            }
            window.benchSent = n;
            if (chunk) controller.enqueue(encoder.encode(chunk));
          }, tick);
        },
      });
      return Promise.resolve(new Response(body, { status: 200, headers: { "Content-Type": "application/x-ndjson" } }));
    };
  }, { apps, rate: RATE });

  await page.goto(`${ORIGIN}/console/`);
  await page.getByLabel("Bearer token").fill("bench");
  const t0 = Date.now();
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForFunction((n) => document.querySelector(".summary strong")?.textContent === String(n) && document.querySelectorAll("#applications tbody tr").length === Math.min(n, 100), APPS, { polling: "raf", timeout: 30_000 });
  const firstRender = Date.now() - t0;
  // The render itself, measured in the page: from the list's arrival to the
  // frame that shows it, is contained in firstRender (with /me and both lists).

  let cdp = null;
  if (process.env.BENCH_PROFILE) {
    cdp = await page.context().newCDPSession(page);
    await cdp.send("Profiler.enable");
    await cdp.send("Profiler.start");
  }
  const result = await page.evaluate(async (seconds) => {
    const frames = [];
    const longTasks = [];
    new PerformanceObserver((list) => longTasks.push(...list.getEntries().map((e) => e.duration))).observe({ type: "longtask", buffered: false });
    let last = performance.now();
    let running = true;
    const frame = (now) => {
      frames.push(now - last);
      last = now;
      if (running) requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
    window.benchStart();
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    running = false;
    const sorted = [...frames].sort((a, b) => a - b);
    const pct = (p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
    return {
      frames: frames.length,
      fps: frames.length / seconds,
      p50: pct(50),
      p95: pct(95),
      p99: pct(99),
      max: sorted[sorted.length - 1],
      longTasks: longTasks.length,
      longTaskMs: longTasks.reduce((a, b) => a + b, 0),
      longestTask: Math.max(0, ...longTasks),
      sent: window.benchSent,
      rows: Number(document.querySelector(".summary strong").textContent),
    };
  }, SECONDS);
  if (cdp) {
    const { profile } = await cdp.send("Profiler.stop");
    const self = new Map();
    const dt = profile.timeDeltas;
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    profile.samples.forEach((id, i) => {
      const n = byId.get(id);
      const k = `${n.callFrame.functionName || "(anon)"} ${n.callFrame.url.split("/").pop()}:${n.callFrame.lineNumber}`;
      self.set(k, (self.get(k) || 0) + (dt[i] || 0) / 1000);
    });
    console.log([...self].sort((a, b) => b[1] - a[1]).slice(0, 15).map(([k, v]) => `${v.toFixed(0)} ms ${k}`).join("\n"));
  }
  const f = (x) => x.toFixed(1);
  console.log(`overview: ${APPS} applications, ${CLUSTERS} clusters`);
  console.log(`time to first render (Sign in -> ${APPS} applications counted, first page of rows on screen): ${firstRender} ms`);
  console.log(`under ${RATE} changes/s for ${SECONDS} s: ${result.sent} changes sent, ${result.frames} frames (${f(result.fps)} fps)`);
  console.log(`frame time: p50 ${f(result.p50)} ms, p95 ${f(result.p95)} ms, p99 ${f(result.p99)} ms, max ${f(result.max)} ms`);
  console.log(`long tasks (>50 ms): ${result.longTasks}, ${f(result.longTaskMs)} ms in all, longest ${f(result.longestTask)} ms`);
  if (result.rows !== APPS) throw new Error(`rows: ${result.rows}`);
} finally {
  await context.close();
}

// The Krake console: hash-routed views over the public REST API, kept live
// through the watch API. No framework and no build step; every text from the
// API goes into the page as text (never as HTML).

import * as api from "./api.js";
import { dump, parseAll, parse } from "./yaml.js";
import { finishInPopup, signIn } from "./auth.js";

// ---------------------------------------------------------------- DOM helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// Replaces an element's children (arrays flattened, null/false left out).
function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

const $ = (id) => document.getElementById(id);
const main = () => $("main");

function badge(state) {
  const text = state || "UNKNOWN";
  return h("span", { class: `badge state-${text.toLowerCase().replaceAll("_", "-")}` }, text);
}

function when(time) {
  if (!time) return "–";
  const d = new Date(time);
  return Number.isNaN(d.getTime()) ? String(time) : d.toLocaleString();
}

function table(caption, headings, rows, attrs = {}) {
  return h(
    "div",
    { class: "table-wrap", role: "region", "aria-label": caption, tabindex: "0" },
    h(
      "table",
      attrs,
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows),
    ),
  );
}

function yamlBlock(label, value) {
  const empty = value === undefined || value === null || (Array.isArray(value) && value.length === 0);
  return h(
    "section",
    { class: "yaml", "aria-label": label },
    h("h3", {}, label),
    empty ? h("p", { class: "muted" }, "None.") : h("pre", { tabindex: "0" }, h("code", {}, dump(value))),
  );
}

function notice(message, kind = "error") {
  const box = $("notice");
  box.hidden = !message;
  box.className = `notice ${kind}`;
  box.textContent = message || "";
}

// ---------------------------------------------------------------- state

const state = {
  user: null,
  config: {},
  namespaces: [],
  namespace: null, // null: every namespace
  listAll: false,
  apps: new Map(),
  clusters: new Map(),
  clouds: new Map(),
  recent: [],
  stops: [],
  listeners: new Set(),
  connection: {},
};

const key = (o) => `${o.metadata.namespace || ""}/${o.metadata.name}`;

function emit(kind, k) {
  for (const listener of state.listeners) listener(kind, k);
}

function remember(kind, type, object) {
  state.recent.unshift({ at: new Date(), kind, type, name: key(object), state: object.status && object.status.state });
  state.recent.length = Math.min(state.recent.length, 12);
}

function watchKind(kind, path, map) {
  return api.listWatch(path, {
    onList(items) {
      map.clear();
      for (const item of items) map.set(key(item), item);
      emit(kind, null);
    },
    onEvent(type, object) {
      const k = key(object);
      if (type === "DELETED") map.delete(k);
      else map.set(k, object);
      remember(kind, type, object);
      emit(kind, k);
    },
    onState(s, error) {
      state.connection[kind] = { s, error };
      showConnection();
    },
  });
}

function showConnection() {
  const parts = Object.entries(state.connection);
  const lost = parts.filter(([, c]) => c.s === "reconnecting");
  const refused = parts.filter(([, c]) => c.s === "refused");
  const el = $("connection");
  if (lost.length) {
    el.className = "connection lost";
    el.textContent = `Connection to the API lost (${lost.map(([k]) => k).join(", ")}); reconnecting…`;
  } else if (parts.length && parts.every(([, c]) => c.s === "live" || c.s === "refused")) {
    el.className = "connection live";
    el.textContent = refused.length
      ? `Live. Not shown, as you may not list them: ${refused.map(([k]) => k).join(", ")}.`
      : "Live: changes appear as they happen.";
  } else {
    el.className = "connection";
    el.textContent = "Connecting…";
  }
}

function startWatches() {
  for (const stop of state.stops) stop();
  state.connection = {};
  state.apps.clear();
  state.clusters.clear();
  state.clouds.clear();
  const ns = state.namespace;
  state.stops = [
    watchKind("applications", api.collection("kubernetes", "applications", ns), state.apps),
    watchKind("clusters", api.collection("kubernetes", "clusters", ns), state.clusters),
    watchKind("clouds", api.collection("infrastructure", "clouds", ns), state.clouds),
  ];
  showConnection();
}

// Which namespaces the user may list: those seen in the all-namespaces
// lists when these are allowed (the API shows only permitted objects), else
// the namespaces of the user's roles that can be listed one by one.
async function discoverNamespaces() {
  const seen = new Set();
  let listAll = true;
  for (const [a, plural] of [["kubernetes", "applications"], ["kubernetes", "clusters"]]) {
    try {
      for (const item of await api.list(api.collection(a, plural, null))) seen.add(item.metadata.namespace);
    } catch (error) {
      if (!(error instanceof api.ApiError) || (error.status !== 403 && error.status !== 401)) throw error;
      listAll = false;
    }
  }
  if (!listAll) {
    const candidates = new Set(seen);
    try {
      const me = await api.get("/me");
      for (const role of me.roles || []) {
        try {
          const r = await api.get(`/core/roles/${encodeURIComponent(role)}`);
          for (const rule of r.rules || []) for (const ns of rule.namespaces || []) if (ns) candidates.add(ns);
        } catch {
          // a role the user may not read
        }
      }
    } catch {
      // no /me
    }
    for (const ns of candidates) {
      try {
        await api.list(api.collection("kubernetes", "applications", ns));
        seen.add(ns);
      } catch {
        seen.delete(ns);
      }
    }
  }
  state.listAll = listAll;
  state.namespaces = [...seen].filter(Boolean).sort();
  if (!listAll && state.namespace === null) state.namespace = state.namespaces[0] || "default";
  renderNamespaces();
}

function renderNamespaces() {
  const select = $("namespace");
  fill(select, 
    state.listAll ? h("option", { value: "" }, "All namespaces") : null,
    state.namespaces.map((ns) => h("option", { value: ns }, ns)),
  );
  if (state.namespace && !state.namespaces.includes(state.namespace)) {
    select.append(h("option", { value: state.namespace }, state.namespace));
  }
  select.value = state.namespace || "";
}

// ---------------------------------------------------------------- sign-in

function renderSignIn(message) {
  $("nav").hidden = true;
  $("session").hidden = true;
  const error = h("p", { id: "token-error", class: "field-error", role: "alert" }, message || "");
  const input = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "off",
    required: true,
    "aria-describedby": "token-help token-error",
    "aria-invalid": message ? "true" : null,
  });
  const form = h(
    "form",
    { class: "card narrow", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title", tabindex: "-1" }, "Sign in to Krake"),
    h("label", { for: "token" }, "Bearer token"),
    input,
    h(
      "p",
      { id: "token-help", class: "help" },
      "A token the API accepts (static, Keystone or Keycloak). It is kept in this page's memory only and sent only to this server.",
    ),
    error,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await begin(input.value.trim(), (m) => {
      error.textContent = m;
      input.setAttribute("aria-invalid", "true");
      input.focus();
    });
  });
  const parts = [form];
  if (state.config.oidc) {
    const oidcError = h("p", { class: "field-error", role: "alert" });
    parts.push(
      h(
        "section",
        { class: "card narrow", "aria-label": "Single sign-on" },
        h("p", {}, `Or sign in with ${new URL(state.config.oidc.issuer).host}.`),
        h(
          "button",
          {
            type: "button",
            onclick: async () => {
              try {
                await begin(await signIn(state.config.oidc), (m) => (oidcError.textContent = m));
              } catch (e) {
                oidcError.textContent = e.message;
              }
            },
          },
          "Sign in with single sign-on",
        ),
        oidcError,
      ),
    );
  }
  fill(main(), ...parts);
  input.focus();
}

async function begin(token, fail) {
  api.setToken(token);
  try {
    const me = await api.get("/me");
    state.user = me.user;
  } catch (error) {
    api.setToken(null);
    return fail(error.message);
  }
  $("user").textContent = `Signed in as ${state.user}`;
  $("nav").hidden = false;
  $("session").hidden = false;
  try {
    await discoverNamespaces();
  } catch (error) {
    notice(error.message);
  }
  startWatches();
  route();
}

function signOut() {
  for (const stop of state.stops) stop();
  state.stops = [];
  state.connection = {};
  api.setToken(null);
  state.user = null;
  $("connection").textContent = "";
  notice("");
  renderSignIn("");
}

// ---------------------------------------------------------------- overview

const PAGE = 100;
const STATES = ["PENDING", "CREATING", "RUNNING", "RECONCILING", "MIGRATING", "DELETING", "FAILED", "DEGRADED"];

function appRow(app) {
  const tr = h("tr");
  tr.dataset.key = key(app);
  fillAppRow(tr, app);
  return tr;
}

function fillAppRow(tr, app) {
  const s = app.status || {};
  const link = h("a", { href: `#/applications/${encodeURIComponent(app.metadata.namespace)}/${encodeURIComponent(app.metadata.name)}` }, app.metadata.name);
  fill(tr, 
    h("td", {}, app.metadata.namespace),
    h("th", { scope: "row" }, link),
    h("td", {}, badge(s.state)),
    h("td", {}, s.running_on ? s.running_on.name : "–"),
    h("td", { class: "reason" }, s.reason ? s.reason.message || s.reason.code : ""),
  );
}

function nodeHealth(cluster) {
  const nodes = (cluster.status && cluster.status.nodes) || [];
  let healthy = 0;
  for (const node of nodes) {
    const ready = ((node.status && node.status.conditions) || []).find((c) => c.type === "Ready");
    if (ready && ready.status === "True") healthy++;
  }
  return `${healthy}/${nodes.length} ready`;
}

function metricsText(cluster) {
  const metrics = (cluster.spec && cluster.spec.metrics) || [];
  const reasons = (cluster.status && cluster.status.metrics_reasons) || {};
  return metrics.map((m) => `${m.name} ×${m.weight}${reasons[m.name] ? ` (${reasons[m.name].code})` : ""}`).join(", ") || "–";
}

function clusterRow(c) {
  return h(
    "tr",
    {},
    h("td", {}, c.metadata.namespace),
    h("th", { scope: "row" }, h("a", { href: `#/clusters/${encodeURIComponent(c.metadata.namespace)}/${encodeURIComponent(c.metadata.name)}` }, c.metadata.name)),
    h("td", {}, badge(c.status && c.status.state)),
    h("td", {}, nodeHealth(c)),
    h("td", {}, metricsText(c)),
  );
}

function renderOverview() {
  const summary = h("ul", { class: "summary", "aria-label": "Applications by state" });
  const appsBody = h("tbody");
  const appsTable = h(
    "div",
    { class: "table-wrap", role: "region", "aria-label": "Applications", tabindex: "0" },
    h(
      "table",
      { id: "applications" },
      h("caption", {}, "Applications"),
      h("thead", {}, h("tr", {}, ["Namespace", "Name", "State", "Running on", "Reason"].map((t) => h("th", { scope: "col" }, t)))),
      appsBody,
    ),
  );
  const clusters = h("div", { id: "clusters-box" });
  const clouds = h("div", { id: "clouds-box" });
  const recent = h("ol", { class: "recent", id: "recent" });
  const rows = new Map();

  const renderSummary = () => {
    const counts = {};
    for (const app of state.apps.values()) {
      const s = (app.status && app.status.state) || "UNKNOWN";
      counts[s] = (counts[s] || 0) + 1;
    }
    const names = [...new Set([...STATES.filter((s) => counts[s]), ...Object.keys(counts)])];
    fill(summary, 
      h("li", {}, h("strong", {}, String(state.apps.size)), " applications"),
      names.map((s) => h("li", {}, badge(s), " ", h("strong", {}, String(counts[s])))),
    );
  };
  // Pages of PAGE rows: a change to one application touches one row, and
  // the browser never lays out thousands of rows.
  let page = 0;
  let listed = new Set();
  const pager = h("div", { class: "pager", role: "group", "aria-label": "Pages of applications" });
  const renderApps = () => {
    rows.clear();
    const sorted = [...state.apps.values()].sort((a, b) => key(a).localeCompare(key(b)));
    listed = new Set(sorted.map(key));
    const pages = Math.max(1, Math.ceil(sorted.length / PAGE));
    page = Math.min(page, pages - 1);
    const shown = sorted.slice(page * PAGE, (page + 1) * PAGE);
    const fragment = document.createDocumentFragment();
    for (const app of shown) {
      const tr = appRow(app);
      rows.set(key(app), tr);
      fragment.append(tr);
    }
    fill(appsBody, fragment);
    if (!sorted.length) appsBody.append(h("tr", {}, h("td", { colspan: "5", class: "muted" }, "No applications.")));
    const go = (to) => () => {
      page = to;
      renderApps();
      appsBody.closest(".table-wrap").focus();
    };
    fill(
      pager,
      pages > 1 ? h("button", { type: "button", onclick: go(page - 1), disabled: page === 0 }, "Previous") : null,
      h("span", { "aria-live": "polite" }, sorted.length ? `Rows ${page * PAGE + 1}–${page * PAGE + shown.length} of ${sorted.length}` : ""),
      pages > 1 ? h("button", { type: "button", onclick: go(page + 1), disabled: page === pages - 1 }, "Next") : null,
    );
  };
  const renderClusters = () => {
    const sorted = [...state.clusters.values()].sort((a, b) => key(a).localeCompare(key(b)));
    fill(clusters, 
      table("Clusters", ["Namespace", "Name", "State", "Nodes", "Metrics"], sorted.length ? sorted.map(clusterRow) : h("tr", {}, h("td", { colspan: "5", class: "muted" }, "No clusters.")), { id: "clusters" }),
    );
  };
  const renderClouds = () => {
    const sorted = [...state.clouds.values()].sort((a, b) => key(a).localeCompare(key(b)));
    fill(clouds, 
      table("Clouds", ["Namespace", "Name", "Type", "State"], sorted.length
        ? sorted.map((c) => h("tr", {}, h("td", {}, c.metadata.namespace), h("th", { scope: "row" }, c.metadata.name), h("td", {}, (c.spec && c.spec.type) || "–"), h("td", {}, badge(c.status && c.status.state))))
        : h("tr", {}, h("td", { colspan: "4", class: "muted" }, "No clouds."))),
    );
  };
  const renderRecent = () => {
    fill(recent, 
      ...(state.recent.length
        ? state.recent.map((r) => h("li", {}, h("time", { datetime: r.at.toISOString() }, r.at.toLocaleTimeString()), ` ${r.kind.replace(/s$/, "")} ${r.name} ${r.type.toLowerCase()}`, r.state ? [" → ", badge(r.state)] : ""))
        : [h("li", { class: "muted" }, "Nothing yet.")]),
    );
  };

  // Changes are applied once per frame, however many arrive.
  const dirty = new Set();
  let full = new Set(["applications", "clusters", "clouds"]);
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (full.has("applications")) renderApps();
    else {
      for (const k of dirty) {
        const app = state.apps.get(k);
        const tr = rows.get(k);
        if (app && tr) fillAppRow(tr, app);
        else if (app ? !listed.has(k) : listed.has(k)) {
          // Added or removed: the pages shift.
          renderApps();
          break;
        }
      }
    }
    if (full.has("applications") || dirty.size) renderSummary();
    if (full.has("clusters")) renderClusters();
    if (full.has("clouds")) renderClouds();
    renderRecent();
    dirty.clear();
    full = new Set();
  };
  const listener = (kind, k) => {
    if (kind === "applications" && k) dirty.add(k);
    else full.add(kind);
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(flush);
    }
  };
  state.listeners.add(listener);
  flush();
  fill(main(), 
    h("h1", { tabindex: "-1" }, "Overview"),
    h("section", { "aria-labelledby": "apps-title" }, h("h2", { id: "apps-title" }, "Applications"), summary, appsTable, pager),
    h("div", { class: "columns" },
      h("section", { "aria-labelledby": "clusters-title" }, h("h2", { id: "clusters-title" }, "Clusters"), clusters),
      h("section", { "aria-labelledby": "clouds-title" }, h("h2", { id: "clouds-title" }, "Clouds"), clouds),
    ),
    h("section", { "aria-labelledby": "recent-title" }, h("h2", { id: "recent-title" }, "Recent changes"), recent),
  );
  return () => state.listeners.delete(listener);
}

// ---------------------------------------------------------------- errors at fields

// The API's 422 problem: `errors` (a list of {field, message}) beyond
// Krake, else `detail`, marshmallow's nested dict (as a Python repr).
function fieldErrors(problem) {
  const out = [];
  if (Array.isArray(problem.errors)) {
    for (const e of problem.errors) out.push([String(e.field || ""), e.entry ? `${e.entry}: ${e.message}` : e.message]);
    return out;
  }
  let detail = problem.detail;
  if (typeof detail === "string") {
    try {
      detail = JSON.parse(detail.replace(/'/g, '"'));
    } catch {
      return [["", problem.detail]];
    }
  }
  const walk = (value, path) => {
    if (Array.isArray(value) && value.every((v) => typeof v === "string")) out.push([path.join("."), value.join(" ")]);
    else if (value && typeof value === "object") for (const [k, v] of Object.entries(value)) walk(v, [...path, k]);
    else out.push([path.join("."), String(value)]);
  };
  walk(detail, []);
  return out;
}

// Shows an API error next to the input its field path maps to
// (`fields`: [prefix, input] pairs, longest prefix first), the rest in
// `general`.
function showErrors(error, fields, general) {
  for (const [, input] of fields) {
    input.removeAttribute("aria-invalid");
    const box = $(`${input.id}-error`);
    if (box) box.textContent = "";
  }
  general.textContent = "";
  if (!(error instanceof api.ApiError) || error.status !== 422) {
    general.textContent = error.message;
    return;
  }
  let first = null;
  for (const [path, message] of fieldErrors(error.problem)) {
    const match = fields.find(([prefix]) => path === prefix || path.startsWith(`${prefix}.`));
    if (match) {
      const [prefix, input] = match;
      const box = $(`${input.id}-error`);
      const where = path.slice(prefix.length).replace(/^\./, "");
      box.textContent = `${box.textContent ? `${box.textContent} ` : ""}${where ? `${where}: ` : ""}${message}`;
      input.setAttribute("aria-invalid", "true");
      first ??= input;
    } else {
      general.textContent += `${path ? `${path}: ` : ""}${message} `;
    }
  }
  if (first) first.focus();
  else general.focus();
}

function field(id, label, input, help) {
  input.id = id;
  input.setAttribute("aria-describedby", `${id}-help ${id}-error`);
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    input,
    help ? h("p", { id: `${id}-help`, class: "help" }, help) : null,
    h("p", { id: `${id}-error`, class: "field-error", "aria-live": "polite" }),
  );
}

function namespaceSelect() {
  const select = h("select", { required: true });
  const options = state.namespaces.length ? state.namespaces : [state.namespace || "default"];
  fill(select, ...options.map((ns) => h("option", { value: ns }, ns)));
  select.value = state.namespace || options[0];
  return select;
}

function parseDocuments(text, input) {
  try {
    const docs = parseAll(text).filter((d) => d !== null);
    // One document that is a list: the list of resources.
    return docs.length === 1 && Array.isArray(docs[0]) ? docs[0] : docs;
  } catch (error) {
    $(`${input.id}-error`).textContent = `Not valid YAML: ${error.message}`;
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return null;
  }
}

// ---------------------------------------------------------------- create application

function renderNewApplication() {
  const name = h("input", { required: true, autocomplete: "off", pattern: "[a-z0-9]([-a-z0-9.]*[a-z0-9])?" });
  const ns = namespaceSelect();
  const manifest = h("textarea", { rows: "16", spellcheck: "false", required: true, class: "code" });
  const labels = h("input", { autocomplete: "off", placeholder: "location=DE" });
  const general = h("p", { class: "form-error", role: "alert", tabindex: "-1" });
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "new-app-title", novalidate: true },
    h("h1", { id: "new-app-title", tabindex: "-1" }, "New application"),
    field("app-name", "Name", name),
    field("app-namespace", "Namespace", ns),
    field("app-manifest", "Manifest (YAML)", manifest, "Kubernetes resources, several separated by --- (or one YAML list). JSON works too."),
    field("app-labels", "Cluster label constraints (optional)", labels, "Comma-separated, e.g. location=DE, tier!=test"),
    general,
    h("button", { type: "submit", class: "primary" }, "Create"),
  );
  const fields = [["metadata.name", name], ["metadata.namespace", ns], ["spec.manifest", manifest], ["spec.constraints", labels]];
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showErrors(new api.ApiError(422, { errors: [] }), fields, general);
    const docs = parseDocuments(manifest.value, manifest);
    if (!docs) return;
    const constraints = labels.value.split(",").map((s) => s.trim()).filter(Boolean);
    const body = {
      api: "kubernetes",
      kind: "Application",
      metadata: { name: name.value.trim(), namespace: ns.value },
      spec: { manifest: docs, constraints: { cluster: constraints.length ? { labels: constraints } : {} }, hooks: [] },
    };
    try {
      const app = await api.call("POST", api.collection("kubernetes", "applications", ns.value), body);
      location.hash = `#/applications/${encodeURIComponent(app.metadata.namespace)}/${encodeURIComponent(app.metadata.name)}`;
    } catch (error) {
      showErrors(error, fields, general);
    }
  });
  fill(main(), form);
}

// ---------------------------------------------------------------- register cluster

function renderNewCluster() {
  const name = h("input", { required: true, autocomplete: "off" });
  const ns = namespaceSelect();
  const file = h("input", { type: "file", accept: ".yaml,.yml,.json,.conf,.config,text/yaml,application/json", required: true });
  const labels = h("input", { autocomplete: "off", placeholder: "location=DE" });
  const general = h("p", { class: "form-error", role: "alert", tabindex: "-1" });
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "new-cluster-title", novalidate: true },
    h("h1", { id: "new-cluster-title", tabindex: "-1" }, "Register a cluster"),
    field("cluster-name", "Name", name),
    field("cluster-namespace", "Namespace", ns),
    field("cluster-kubeconfig", "Kubeconfig file", file, "Read in the browser: JSON, or YAML as kubectl writes it (block mappings and lists, plain and quoted values; no anchors or tags)."),
    field("cluster-labels", "Labels (optional)", labels, "Comma-separated key=value pairs"),
    general,
    h("button", { type: "submit", class: "primary" }, "Register"),
  );
  const fields = [["metadata.name", name], ["metadata.labels", labels], ["spec.kubeconfig", file]];
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showErrors(new api.ApiError(422, { errors: [] }), fields, general);
    if (!file.files.length) {
      $("cluster-kubeconfig-error").textContent = "Choose a kubeconfig file.";
      file.focus();
      return;
    }
    let kubeconfig;
    try {
      kubeconfig = parse(await file.files[0].text());
      if (!kubeconfig || typeof kubeconfig !== "object") throw new Error("it is not a mapping");
    } catch (error) {
      $("cluster-kubeconfig-error").textContent = `Not a kubeconfig: ${error.message}`;
      file.setAttribute("aria-invalid", "true");
      file.focus();
      return;
    }
    const labelMap = {};
    for (const pair of labels.value.split(",").map((s) => s.trim()).filter(Boolean)) {
      const [k, ...v] = pair.split("=");
      labelMap[k.trim()] = v.join("=").trim();
    }
    const body = {
      api: "kubernetes",
      kind: "Cluster",
      metadata: { name: name.value.trim(), namespace: ns.value, labels: labelMap },
      spec: { kubeconfig, constraints: { cloud: {} }, metrics: [], custom_resources: [] },
    };
    try {
      const c = await api.call("POST", api.collection("kubernetes", "clusters", ns.value), body);
      location.hash = `#/clusters/${encodeURIComponent(c.metadata.namespace)}/${encodeURIComponent(c.metadata.name)}`;
    } catch (error) {
      showErrors(error, fields, general);
    }
  });
  fill(main(), form);
}

// ---------------------------------------------------------------- object pages

// Follows one object: from the live store when its namespace is watched,
// else read once (and on every action).
function follow(kind, map, a, plural, ns, name, render) {
  const k = `${ns}/${name}`;
  let gone = false;
  const show = (object) => render(object, gone);
  const load = async () => {
    try {
      show(await api.get(api.objectPath(a, plural, ns, name)));
    } catch (error) {
      if (error.status === 404) {
        gone = true;
        show(null);
      } else fill(main(), h("h1", { tabindex: "-1" }, name), h("p", { class: "form-error", role: "alert" }, error.message));
    }
  };
  const listener = (changed, which) => {
    if (changed !== kind || (which !== null && which !== k)) return;
    if (map.has(k)) show(map.get(k));
    else if (which === k) {
      gone = true;
      show(null);
    }
  };
  state.listeners.add(listener);
  if (map.has(k)) show(map.get(k));
  else load();
  return { stop: () => state.listeners.delete(listener), reload: load };
}

function actionButton(label, run, status, cls = "") {
  return h("button", {
    type: "button",
    class: cls,
    onclick: async () => {
      status.className = "action-status";
      status.textContent = `${label}…`;
      try {
        await run();
        status.textContent = `${label}: done.`;
      } catch (error) {
        status.className = "action-status error";
        status.textContent = `${label} failed: ${error.message}`;
      }
    },
  }, label);
}

function renderApplication(ns, name) {
  const path = api.objectPath("kubernetes", "applications", ns, name);
  const details = h("div", { id: "details" });
  const status = h("p", { class: "action-status", role: "status", "aria-live": "polite" });
  const editor = h("textarea", { rows: "18", spellcheck: "false", class: "code" });
  const general = h("p", { class: "form-error", role: "alert", tabindex: "-1" });
  let loaded = false;
  const actions = h(
    "div",
    { class: "actions", role: "group", "aria-label": "Actions" },
    actionButton("Retry", () => api.call("PUT", `${path}/retry`), status),
    actionButton("Delete", async () => {
      if (!confirm(`Delete application ${name}?`)) throw new Error("cancelled");
      await api.call("DELETE", path);
    }, status, "danger"),
    actionButton("Force delete", async () => {
      if (!confirm(`Remove application ${name} at once, without cleaning up its resources on the cluster?`)) throw new Error("cancelled");
      await api.call("DELETE", `${path}?force=True`);
    }, status, "danger"),
  );
  const edit = h(
    "form",
    { class: "card", "aria-labelledby": "edit-title", novalidate: true },
    h("h2", { id: "edit-title" }, "Edit the manifest"),
    field("edit-manifest", "Manifest (YAML)", editor, "Kubernetes resources, several separated by --- (or one YAML list)."),
    general,
    h("button", { type: "submit", class: "primary" }, "Save"),
  );
  edit.addEventListener("submit", async (event) => {
    event.preventDefault();
    const fields = [["spec.manifest", editor]];
    showErrors(new api.ApiError(422, { errors: [] }), fields, general);
    const docs = parseDocuments(editor.value, editor);
    if (!docs) return;
    try {
      const current = await api.get(path);
      current.spec.manifest = docs;
      await api.call("PUT", path, current);
      status.textContent = "Manifest saved.";
    } catch (error) {
      showErrors(error, fields, general);
    }
  });
  const { stop } = follow("applications", state.apps, "kubernetes", "applications", ns, name, (app, gone) => {
    if (!app) {
      fill(details, h("p", { class: "gone", role: "status" }, gone ? "This application has been deleted." : "Not found."));
      actions.hidden = true;
      edit.hidden = true;
      return;
    }
    const s = app.status || {};
    if (!loaded) {
      editor.value = app.spec.manifest.map((d) => dump(d)).join("---\n");
      loaded = true;
    }
    const services = Object.entries(s.services || {});
    fill(details, 
      h("dl", { class: "facts" },
        h("dt", {}, "State"), h("dd", { id: "app-state" }, badge(s.state)),
        h("dt", {}, "Reason"), h("dd", {}, s.reason ? `${s.reason.code}: ${s.reason.message}` : "–"),
        h("dt", {}, "Running on"), h("dd", {}, s.running_on ? h("a", { href: `#/clusters/${encodeURIComponent(s.running_on.namespace)}/${encodeURIComponent(s.running_on.name)}` }, s.running_on.name) : "–"),
        h("dt", {}, "Scheduled to"), h("dd", {}, s.scheduled_to ? s.scheduled_to.name : "–"),
        h("dt", {}, "Scheduled"), h("dd", {}, when(s.scheduled)),
        h("dt", {}, "Hooks"), h("dd", {}, (app.spec.hooks || []).join(", ") || "none"),
        h("dt", {}, "Services"), h("dd", {}, services.length ? h("ul", { class: "plain" }, services.map(([n, addr]) => h("li", {}, h("a", { href: `http://${addr}`, rel: "noopener noreferrer", target: "_blank" }, `${n}: ${addr}`)))) : "none"),
        h("dt", {}, "Created"), h("dd", {}, when(app.metadata.created)),
        h("dt", {}, "Deleted"), h("dd", {}, app.metadata.deleted ? when(app.metadata.deleted) : "–"),
      ),
      h("div", { class: "columns" },
        yamlBlock("Manifest", app.spec.manifest),
        yamlBlock("Observer schema", app.spec.observer_schema),
        yamlBlock("Last observed manifest", s.last_observed_manifest),
        yamlBlock("Constraints", app.spec.constraints),
      ),
    );
  });
  fill(main(), 
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Overview"), " / application"),
    h("h1", { tabindex: "-1" }, `${name}`, h("span", { class: "ns" }, ` in ${ns}`)),
    actions,
    status,
    details,
    edit,
  );
  return stop;
}

function renderCluster(ns, name) {
  const path = api.objectPath("kubernetes", "clusters", ns, name);
  const details = h("div", { id: "details" });
  const status = h("p", { class: "action-status", role: "status", "aria-live": "polite" });
  const actions = h(
    "div",
    { class: "actions", role: "group", "aria-label": "Actions" },
    actionButton("Delete", async () => {
      if (!confirm(`Delete cluster ${name}?`)) throw new Error("cancelled");
      await api.call("DELETE", path);
    }, status, "danger"),
    actionButton("Force delete", async () => {
      if (!confirm(`Remove cluster ${name} at once?`)) throw new Error("cancelled");
      await api.call("DELETE", `${path}?force=True`);
    }, status, "danger"),
  );
  const render = (c, gone) => {
    if (!c) {
      fill(details, h("p", { class: "gone", role: "status" }, gone ? "This cluster has been deleted." : "Not found."));
      actions.hidden = true;
      return;
    }
    const s = c.status || {};
    const nodes = s.nodes || [];
    const labels = Object.entries(c.metadata.labels || {});
    const apps = [...state.apps.values()].filter((a) => a.status && a.status.running_on && a.status.running_on.name === name && a.metadata.namespace === ns);
    fill(details, 
      h("dl", { class: "facts" },
        h("dt", {}, "State"), h("dd", { id: "cluster-state" }, badge(s.state)),
        h("dt", {}, "Reason"), h("dd", {}, s.reason ? `${s.reason.code}: ${s.reason.message}` : "–"),
        h("dt", {}, "Nodes"), h("dd", {}, nodeHealth(c)),
        h("dt", {}, "Labels"), h("dd", {}, labels.length ? labels.map(([k, v]) => h("span", { class: "label" }, `${k}=${v}`)) : "none"),
        h("dt", {}, "Metrics"), h("dd", {}, metricsText(c)),
        h("dt", {}, "Custom resources"), h("dd", {}, (c.spec.custom_resources || []).join(", ") || "none"),
        h("dt", {}, "Created"), h("dd", {}, when(c.metadata.created)),
      ),
      table("Nodes", ["Node", "Conditions"], nodes.length
        ? nodes.map((n) => h("tr", {}, h("th", { scope: "row" }, n.metadata.name), h("td", {}, ((n.status && n.status.conditions) || []).map((cond) => h("span", { class: `cond cond-${cond.status === "True" ? (cond.type === "Ready" ? "good" : "bad") : (cond.type === "Ready" ? "bad" : "good")}`, title: cond.message }, `${cond.type}=${cond.status}`)))))
        : h("tr", {}, h("td", { colspan: "2", class: "muted" }, "No nodes reported yet."))),
      table("Applications on this cluster", ["Name", "State"], apps.length
        ? apps.map((a) => h("tr", {}, h("th", { scope: "row" }, h("a", { href: `#/applications/${encodeURIComponent(ns)}/${encodeURIComponent(a.metadata.name)}` }, a.metadata.name)), h("td", {}, badge(a.status.state))))
        : h("tr", {}, h("td", { colspan: "2", class: "muted" }, "None."))),
    );
  };
  const followed = follow("clusters", state.clusters, "kubernetes", "clusters", ns, name, render);
  const onApps = (kind) => {
    if (kind === "applications" && state.clusters.has(`${ns}/${name}`)) render(state.clusters.get(`${ns}/${name}`), false);
  };
  state.listeners.add(onApps);
  fill(main(), 
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Overview"), " / cluster"),
    h("h1", { tabindex: "-1" }, name, h("span", { class: "ns" }, ` in ${ns}`)),
    actions,
    status,
    details,
  );
  return () => {
    followed.stop();
    state.listeners.delete(onApps);
  };
}

// ---------------------------------------------------------------- routing

let leave = null;

function route() {
  if (leave) leave();
  leave = null;
  notice("");
  if (!api.signedIn()) return renderSignIn("");
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === `#/${parts[0] === "" ? "" : parts[0]}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (parts[0] === "applications" && parts.length === 3) leave = renderApplication(parts[1], parts[2]);
  else if (parts[0] === "clusters" && parts.length === 3) leave = renderCluster(parts[1], parts[2]);
  else if (parts[0] === "new-application") renderNewApplication();
  else if (parts[0] === "new-cluster") renderNewCluster();
  else leave = renderOverview();
  const title = main().querySelector("h1");
  document.title = `${title ? title.textContent : "Krake"} – Krake console`;
  if (title) title.focus({ preventScroll: false });
}

async function start() {
  if (finishInPopup()) return;
  try {
    state.config = await (await fetch("/console/config.json")).json();
  } catch {
    state.config = {};
  }
  $("sign-out").addEventListener("click", signOut);
  $("namespace").addEventListener("change", (event) => {
    state.namespace = event.target.value || null;
    startWatches();
    route();
  });
  window.addEventListener("hashchange", route);
  renderSignIn("");
}

start();

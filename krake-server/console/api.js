// The console's only way to Krake: the public REST API on this origin, with
// the signed-in user's token (kept in memory only, sent only to this origin).

let token = null;

export function setToken(value) {
  token = value || null;
}

export function signedIn() {
  return token !== null;
}

/** An API answer that is not 2xx, with its problem details. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(describe(status, problem));
    this.status = status;
    this.problem = problem || {};
  }
}

function describe(status, problem) {
  const detail = problem && problem.detail;
  if (status === 401) return "You are not signed in, or your token is no longer valid.";
  if (status === 403) return "You are not allowed to do this (the server refused it: 403 Forbidden).";
  if (typeof detail === "string") return detail;
  if (problem && problem.title) return `${problem.title} (${status})`;
  return `The server answered ${status}.`;
}

function headers(extra) {
  const h = { Accept: "application/json", ...extra };
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

function sameOrigin(path) {
  if (!path.startsWith("/") || path.startsWith("//")) throw new Error(`not an API path: ${path}`);
  return path;
}

/** `method path` with an optional JSON body; the parsed answer. */
export async function call(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  init.credentials = "omit";
  const response = await fetch(sameOrigin(path), init);
  const text = await response.text();
  let value = null;
  try {
    value = text ? JSON.parse(text) : null;
  } catch {
    value = { detail: text };
  }
  if (!response.ok) throw new ApiError(response.status, value);
  return value;
}

export const get = (path) => call("GET", path);
export const list = async (path) => (await call("GET", path)).items || [];

/** The collection path of a kind (`ns` null: every namespace). */
export function collection(api, plural, ns) {
  return ns ? `/${api}/namespaces/${encodeURIComponent(ns)}/${plural}` : `/${api}/${plural}`;
}

export function objectPath(api, plural, ns, name) {
  return `${collection(api, plural, ns)}/${encodeURIComponent(name)}`;
}

/**
 * Lists `path` and then watches it (`?watch`, newline-delimited JSON read
 * through fetch's stream, so that the Authorization header is sent), from
 * the list's `resource_version`. A lost stream is resumed from the last
 * revision seen (krake-rs' `resource_version` watch parameter); when the
 * server no longer has it (410) or answers otherwise, the console lists
 * again and watches again, after a growing pause. `onList(items)` gets each
 * full list, `onEvent(type, object)` each event and `onState(state, error)`
 * "live", "reconnecting" or "refused". Returns a function that stops it.
 */
export function listWatch(path, { onList, onEvent, onState }) {
  let stopped = false;
  let controller = null;
  let delay = 500;
  let revision = null;
  const later = (a, b) => (b && (!a || BigInt(b) > BigInt(a)) ? b : a);
  const run = async () => {
    while (!stopped) {
      controller = new AbortController();
      try {
        if (revision === null) {
          const answer = await call("GET", path);
          revision = (answer.metadata && answer.metadata.resource_version) || null;
          if (revision === "0") revision = null;
          onList(answer.items || []);
        }
        const query = revision ? `watch&heartbeat=5&resource_version=${encodeURIComponent(revision)}` : "watch&heartbeat=5";
        const response = await fetch(`${path}?${query}`, {
          headers: headers({}),
          signal: controller.signal,
          credentials: "omit",
        });
        if (!response.ok) {
          let problem = null;
          try {
            problem = await response.json();
          } catch {
            // no body
          }
          throw new ApiError(response.status, problem);
        }
        onState("live");
        delay = 500;
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let nl;
          while ((nl = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, nl).trim();
            buffer = buffer.slice(nl + 1);
            if (!line) continue;
            const event = JSON.parse(line);
            const meta = event.object && event.object.metadata;
            if (meta && event.type !== "DELETED") revision = later(revision, meta.resource_version);
            onEvent(event.type, event.object);
          }
        }
        if (stopped) return;
        onState("reconnecting", new Error("The watch stream ended."));
      } catch (error) {
        if (stopped) return;
        if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
          onState("refused", error);
          return;
        }
        // Anything but a network failure: start over from a fresh list.
        if (error instanceof ApiError || error instanceof SyntaxError) revision = null;
        onState("reconnecting", error);
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 8000);
    }
  };
  run();
  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}

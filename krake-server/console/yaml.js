// A small YAML emitter and a parser for the YAML subset the console reads:
// block mappings and sequences, plain, single- and double-quoted scalars,
// flow collections written as JSON ([...] / {...} with double quotes),
// literal/folded block scalars (| and >), comments and several documents
// separated by `---`. Anchors, aliases, tags and complex keys are not read:
// such a file gives a clear error (JSON always works, JSON being YAML).

const PLAIN = /^[A-Za-z_./][A-Za-z0-9_./:@+-]*$/;
const RESERVED = /^(true|false|null|yes|no|on|off|~|-?[0-9][0-9_.eE+-]*|\.inf|\.nan)$/i;

function scalar(value) {
  if (value === null || value === undefined) return "null";
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  const text = String(value);
  if (PLAIN.test(text) && !RESERVED.test(text) && !text.endsWith(":")) return text;
  return JSON.stringify(text);
}

function emit(value, indent, lines, prefix) {
  const pad = " ".repeat(indent);
  if (Array.isArray(value)) {
    if (value.length === 0) return void lines.push(prefix + "[]");
    if (prefix.trim() !== "") lines.push(prefix.trimEnd());
    for (const item of value) {
      if (item !== null && typeof item === "object" && Object.keys(item).length > 0) {
        const sub = [];
        emit(item, indent + 2, sub, "");
        sub[0] = pad + "- " + sub[0].slice(indent + 2);
        lines.push(...sub);
      } else emit(item, indent + 2, lines, pad + "- ");
    }
  } else if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 0) return void lines.push(prefix + "{}");
    if (prefix.trim() !== "") lines.push(prefix.trimEnd());
    for (const key of keys) {
      const item = value[key];
      const head = pad + scalar(key) + ":";
      if (item !== null && typeof item === "object" && Object.keys(item).length > 0) {
        lines.push(head);
        emit(item, Array.isArray(item) ? indent : indent + 2, lines, "");
      } else emit(item, indent + 2, lines, head + " ");
    }
  } else if (typeof value === "string" && value.includes("\n")) {
    lines.push(prefix + "|" + (value.endsWith("\n") ? "" : "-"));
    for (const line of value.replace(/\n$/, "").split("\n")) lines.push(pad + line);
  } else lines.push(prefix + scalar(value));
}

/** YAML text of a JSON value. */
export function dump(value) {
  const lines = [];
  emit(value, 0, lines, "");
  return lines.join("\n") + "\n";
}

export class YamlError extends Error {
  constructor(message, line) {
    super(line ? `line ${line}: ${message}` : message);
    this.line = line;
  }
}

function stripComment(text) {
  let quote = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === "\\" && quote === '"') i++;
      else if (c === quote) quote = null;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === "#" && (i === 0 || /\s/.test(text[i - 1]))) return text.slice(0, i).trimEnd();
  }
  return text.trimEnd();
}

function parseScalar(raw, line) {
  const text = raw.trim();
  if (text === "" || text === "~" || text === "null" || text === "Null" || text === "NULL") return null;
  if (text.startsWith("[") || text.startsWith("{")) {
    try {
      return JSON.parse(text);
    } catch {
      throw new YamlError("flow collections must be written as JSON", line);
    }
  }
  if (text.startsWith('"')) {
    try {
      return JSON.parse(text);
    } catch {
      throw new YamlError("bad double-quoted string", line);
    }
  }
  if (text.startsWith("'")) {
    if (!text.endsWith("'") || text.length < 2) throw new YamlError("bad single-quoted string", line);
    return text.slice(1, -1).replaceAll("''", "'");
  }
  if (/^[&*!]/.test(text)) throw new YamlError("anchors, aliases and tags are not supported", line);
  if (/^(true|True|TRUE)$/.test(text)) return true;
  if (/^(false|False|FALSE)$/.test(text)) return false;
  if (/^[-+]?[0-9]+$/.test(text)) return Number(text);
  if (/^[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$|^[-+]?[0-9]+[eE][-+]?[0-9]+$/.test(text)) return Number(text);
  return text;
}

// Splits `key: value` (the colon must be followed by a space or the end).
function splitKey(text, line) {
  let quote = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === "\\" && quote === '"') i++;
      else if (c === quote) quote = null;
    } else if ((c === '"' || c === "'") && i === 0) quote = c;
    else if (c === ":" && (i + 1 === text.length || text[i + 1] === " ")) {
      const key = parseScalar(text.slice(0, i), line);
      return [key === null ? "null" : String(key), text.slice(i + 1)];
    }
  }
  return null;
}

function parseDocument(lines) {
  let pos = 0;
  const next = () => {
    while (pos < lines.length && lines[pos].text.trim() === "") pos++;
    return pos < lines.length ? lines[pos] : null;
  };
  const indentOf = (l) => l.text.length - l.text.trimStart().length;

  function block(rest, line, parentIndent) {
    // A value after `key:` or `- `: inline scalar, block scalar or nested block.
    const text = rest.trim();
    if (text === "|" || text === ">" || /^[|>][-+]?$/.test(text)) {
      const folded = text[0] === ">";
      const out = [];
      let own = null;
      while (pos < lines.length) {
        const l = lines[pos];
        if (l.raw.trim() === "") {
          out.push("");
          pos++;
          continue;
        }
        const ind = l.raw.length - l.raw.trimStart().length;
        if (ind <= parentIndent) break;
        own ??= ind;
        out.push(l.raw.slice(own));
        pos++;
      }
      while (out.length && out[out.length - 1] === "") out.pop();
      let value = folded ? out.join(" ").replace(/ ?\n ?/g, "\n") : out.join("\n");
      if (!text.endsWith("-")) value += "\n";
      return value;
    }
    if (text !== "") return parseScalar(text, line);
    const l = next();
    if (!l || indentOf(l) < parentIndent || (indentOf(l) === parentIndent && !l.text.trimStart().startsWith("- ")
      && l.text.trim() !== "-")) return null;
    return node(indentOf(l));
  }

  function node(indent) {
    const first = next();
    const isSeq = first.text.trimStart().startsWith("- ") || first.text.trim() === "-";
    const result = isSeq ? [] : {};
    for (let l = next(); l; l = next()) {
      const ind = indentOf(l);
      if (ind < indent) break;
      if (ind > indent) throw new YamlError("unexpected indentation", l.number);
      const text = l.text.trimStart();
      if (isSeq) {
        if (!(text.startsWith("- ") || text === "-")) break;
        const after = text.slice(1);
        const itemIndent = ind + 1 + (after.length - after.trimStart().length);
        const body = after.trim();
        pos++;
        if (body.startsWith("- ") || (body !== "" && splitKey(body, l.number) && !/^["'[{]/.test(body))) {
          // `- key: value` (`- - x`) starts a mapping (a sequence) at the item's indentation.
          pos--;
          lines[pos] = { ...l, text: " ".repeat(itemIndent) + body };
          result.push(node(itemIndent));
        } else result.push(block(body, l.number, ind));
      } else {
        if (text.startsWith("- ")) break;
        const kv = splitKey(text, l.number);
        if (!kv) throw new YamlError(`expected "key: value", found ${JSON.stringify(text)}`, l.number);
        pos++;
        result[kv[0]] = block(kv[1], l.number, ind);
      }
    }
    return result;
  }

  const first = next();
  if (!first) return null;
  const text = first.text.trim();
  if (!text.startsWith("-") && !splitKey(text, first.number)) {
    pos++;
    const value = parseScalar(text, first.number);
    if (next()) throw new YamlError("more than one value", lines[pos].number);
    return value;
  }
  const value = node(indentOf(first));
  const rest = next();
  if (rest) throw new YamlError("unexpected content", rest.number);
  return value;
}

/** Every document of a YAML (or JSON) text. */
export function parseAll(text) {
  const trimmed = text.trim();
  if (trimmed.startsWith("{") || (trimmed.startsWith("[") && !trimmed.startsWith("[-"))) {
    try {
      return [JSON.parse(trimmed)];
    } catch {
      // fall through to YAML
    }
  }
  const docs = [];
  let current = [];
  text.replace(/\r\n?/g, "\n").split("\n").forEach((raw, i) => {
    if (/^---(\s|$)/.test(raw) || /^\.\.\.\s*$/.test(raw)) {
      if (current.some((l) => l.text.trim() !== "")) docs.push(current);
      current = [];
      return;
    }
    if (raw.includes("\t") && /^\s*\t/.test(raw)) throw new YamlError("tabs cannot indent YAML", i + 1);
    current.push({ raw, text: stripComment(raw), number: i + 1 });
  });
  if (current.some((l) => l.text.trim() !== "")) docs.push(current);
  return docs.map(parseDocument);
}

/** The one document of a YAML (or JSON) text. */
export function parse(text) {
  const docs = parseAll(text);
  if (docs.length !== 1) throw new YamlError(`expected one document, found ${docs.length}`);
  return docs[0];
}

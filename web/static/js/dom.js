// Building the page: every value from the server becomes text, never markup.
//
// `h()` is the only way this UI makes elements. Strings become text nodes
// (textContent), attributes are set one by one, and event handler attributes
// (`onclick=...`) and `innerHTML` are refused outright, so a provider named
// `<img src=x onerror=alert(1)>` shows as those characters. The page's
// Content-Security-Policy forbids inline script as a second wall.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(parent, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) {
    for (const item of child) append(parent, item);
  } else if (child instanceof Node) {
    parent.appendChild(child);
  } else {
    parent.appendChild(document.createTextNode(String(child)));
  }
}

function setProps(el, props) {
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "on") {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (name === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (name === "text") {
      el.textContent = String(value);
    } else if (name === "dataset") {
      for (const [key, data] of Object.entries(value)) el.dataset[key] = String(data);
    } else if (name === "value" || name === "checked" || name === "selected") {
      el[name] = value;
    } else if (/^on/i.test(name) || name === "innerHTML" || name === "outerHTML" || name === "style") {
      throw new Error(`refused to set ${name}: handlers via {on: ...}, text via children`);
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

/** An HTML element: h("td", {class: "num"}, "12"). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  append(el, children);
  return el;
}

/** An SVG element, same rules. */
export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setProps(el, props);
  append(el, children);
  return el;
}

/** Replace an element's children in one step (no blank frame in between). */
export function fill(el, ...children) {
  const fragment = document.createDocumentFragment();
  append(fragment, children);
  el.replaceChildren(fragment);
  return el;
}

/** Set text only when it changed: a refresh that changes nothing repaints nothing. */
export function setText(el, text) {
  const value = String(text ?? "");
  if (el.textContent !== value) el.textContent = value;
}

// -- formatting: numbers, times (the browser's time zone), durations -----------

const numbers = new Intl.NumberFormat();
export const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";

export function num(value) {
  return value === null || value === undefined ? "–" : numbers.format(value);
}

export function pct(part, whole) {
  if (!whole) return "–";
  const share = (100 * part) / whole;
  return `${share >= 10 || share === 0 ? Math.round(share) : share.toFixed(1)}%`;
}

export function ms(value) {
  if (value === null || value === undefined) return "–";
  if (value >= 10000) return `${(value / 1000).toFixed(1)} s`;
  return `${Math.round(value)} ms`;
}

/** Dollars as a person reads them: cents, or the first digits of less than a cent
 * (as chain429.routing.budget.usd writes them). */
export function usd(amount) {
  if (amount === null || amount === undefined) return "–";
  if (amount === 0 || Math.abs(amount) >= 0.01) return `$${amount.toFixed(2)}`;
  if (Math.abs(amount) < 0.000001) return amount > 0 ? "<$0.000001" : "-<$0.000001";
  return `$${amount.toFixed(6).replace(/0+$/, "")}`;
}

/** What is left of a budget, as usd writes it but never more than it is: whole cents
 * rounded down (as chain429.routing.budget.usd_left writes them). */
export function usdLeft(amount) {
  if (amount === null || amount === undefined) return "–";
  return usd(amount >= 0.01 ? Math.floor(amount * 100 + 1e-6) / 100 : amount);
}

function toDate(value) {
  if (value === null || value === undefined || value === "") return null;
  const date = typeof value === "number" ? new Date(value) : new Date(String(value));
  return Number.isNaN(date.getTime()) ? null : date;
}

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric",
  hour: "2-digit", minute: "2-digit", second: "2-digit",
});
const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const shortClock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayClock = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

/** A moment (ISO 8601 or epoch ms) in the browser's time zone. */
export function when(value) {
  const date = toDate(value);
  return date ? dateTime.format(date) : "–";
}

export function clockTime(value, withDay = false, seconds = true) {
  const date = toDate(value);
  if (!date) return "–";
  if (withDay) return dayClock.format(date);
  return seconds ? clock.format(date) : shortClock.format(date);
}

/** A duration: `45 s`, `3 min 05 s`, `2 h 04 min`, `1 d 3 h`. */
export function duration(millis) {
  if (millis === null || millis === undefined) return "–";
  let seconds = Math.max(0, Math.ceil(millis / 1000));
  if (seconds < 60) return `${seconds} s`;
  const days = Math.floor(seconds / 86400);
  seconds -= days * 86400;
  const hours = Math.floor(seconds / 3600);
  seconds -= hours * 3600;
  const minutes = Math.floor(seconds / 60);
  seconds -= minutes * 60;
  if (days) return `${days} d ${hours} h`;
  if (hours) return `${hours} h ${String(minutes).padStart(2, "0")} min`;
  return `${minutes} min ${String(seconds).padStart(2, "0")} s`;
}

/** `in 28 s` / `2 min ago`, from a moment and now. */
export function relative(value, now = Date.now()) {
  const date = toDate(value);
  if (!date) return "–";
  const delta = date.getTime() - now;
  return delta >= 0 ? `in ${duration(delta)}` : `${duration(-delta)} ago`;
}

/** The time ranges a page of numbers offers: [id, label, length in ms]. */
export const RANGES = [
  ["1h", "1 h", 3600e3],
  ["24h", "24 h", 86400e3],
  ["7d", "7 d", 7 * 86400e3],
  ["30d", "30 d", 30 * 86400e3],
];

/**
 * A page of numbers over a time range: its heading, the range switch (the address's
 * `range`, 24 h by default) and the "updated" stamp. Returns the range chosen, the
 * body to fill, and the stamp to set.
 */
export function rangedPage(view, ctx, title, pageId) {
  const range = RANGES.find((r) => r[0] === ctx.route.params.get("range")) || RANGES[1];
  const body = h("div", { class: "stack" }, h("p", { class: "loading" }, "Loading…"));
  const updated = h("span", { class: "updated", "aria-live": "off" });
  fill(view,
    h("div", { class: "row spread" },
      h("h1", null, title),
      h("div", { class: "row" }, updated,
        h("div", { class: "segmented", role: "group", "aria-label": "Time range" },
          RANGES.map(([id, label]) => h("button", {
            type: "button", "aria-pressed": String(id === range[0]),
            on: { click: () => ctx.go(`#/${pageId}?range=${id}`) },
          }, label))))),
    body);
  return { range, body, updated };
}

/** A small message block: `kind` is info, ok, warn or error. */
export function banner(kind, ...children) {
  return h("div", { class: ["banner", kind], role: kind === "error" ? "alert" : "status" }, ...children);
}

export function badge(text, kind) {
  return h("span", { class: ["badge", kind || "neutral"] }, text);
}

const columnLabel = (c) => (typeof c === "string" ? c : c.label);

/** Name each cell of a row after its column: a narrow screen shows a row as a card of labelled lines. */
export function labelCells(row, columns) {
  [...row.children].forEach((cell, i) => {
    const label = columns[i] === undefined ? "" : columnLabel(columns[i]);
    if (label) cell.dataset.label = label;
  });
  return row;
}

/**
 * A table whose head is `columns` (strings or {label, class}). `stacked`: on a
 * narrow screen each row becomes a card (cells labelled by labelCells).
 */
export function table(columns, rows, { caption, className, stacked = false } = {}) {
  const head = h("tr", null, columns.map((c) =>
    typeof c === "string" ? h("th", { scope: "col" }, c) : h("th", { scope: "col", class: c.class }, c.label)));
  const body = rows instanceof HTMLTableSectionElement ? rows : h("tbody", null, rows);
  if (stacked) for (const row of body.children) labelCells(row, columns);
  return h("div", { class: "table-wrap" },
    h("table", { class: [className, stacked ? "stacked" : null] },
      caption ? h("caption", null, caption) : null,
      h("thead", null, head),
      body));
}

/** A `<dl>` of label/value pairs. */
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([label, value]) => [h("dt", null, label), h("dd", null, value)]));
}

export function button(label, onClick, props = {}) {
  return h("button", { type: "button", ...props, on: { click: onClick, ...(props.on || {}) } }, label);
}

/**
 * Update a table body in place from `items`: rows are matched by key, kept
 * (with their focus and hover) when they stay, added and removed as needed.
 */
export function syncRows(tbody, items, keyOf, create, update) {
  const existing = new Map([...tbody.children].map((row) => [row.dataset.key, row]));
  let previous = null;
  for (const item of items) {
    const key = keyOf(item);
    let row = existing.get(key);
    if (row) {
      existing.delete(key);
    } else {
      row = create(item);
      row.dataset.key = key;
    }
    update(row, item);
    const wanted = previous ? previous.nextSibling : tbody.firstChild;
    if (row !== wanted) tbody.insertBefore(row, wanted);
    previous = row;
  }
  for (const row of existing.values()) row.remove();
}

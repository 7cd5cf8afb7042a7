// Requests: the request log, filtered and paged, and one request's attempt trail.
//
// `/v1/stats/requests` with the filters in the address (`#/requests?chain=fast`,
// `#/requests?client=alice&endpoint=embeddings`), so a filtered view can be
// bookmarked; paging follows the server's cursors. The endpoint and outcome
// words are the server's own, the enums of its OpenAPI document (the outcomes'
// one home is chain429.requestlog.records.REQUEST_OUTCOMES).
// `#/requests/<id>` shows `/v1/stats/requests/<id>`: each entry considered, in
// order, with its outcome, latency, the cooldown it set and why. CLI: `chain429
// logs [--chain ...]` and `chain429 logs <id>`.

import { get, query, seg } from "../api.js";
import { badge, banner, button, duration, facts, fill, h, ms, num, table, usd, when } from "../dom.js";
import { readConfig } from "../edits.js";

const RANGES = [["1h", "last hour"], ["24h", "last 24 hours"], ["7d", "last 7 days"], ["30d", "last 30 days"]];
const FILTERS = ["range", "client", "endpoint", "chain", "provider", "status", "outcome"];
const PAGE_SIZE = 50;
let words = null; // {outcomes, endpoints}: the server's own, from /openapi.json, once
const cursors = []; // the cursors of the pages before this one ("" for the first)
let listHash = "#/requests";

/** The filter words this server documents as enums (none when it cannot be read). */
async function vocabulary(signal) {
  if (!words) {
    const enumOf = (doc, name) => {
      const schema = ((doc.components || {}).parameters || {})[name]?.schema;
      return schema && Array.isArray(schema.enum) && schema.enum.length ? schema.enum : null;
    };
    try {
      const { data } = await get("/openapi.json", { signal });
      words = { outcomes: enumOf(data, "outcome") || [], endpoints: enumOf(data, "endpoint") || [] };
    } catch (err) {
      if (err.name === "AbortError") throw err;
      words = { outcomes: [], endpoints: [] }; // the filters still take "any" and what is chosen
    }
  }
  return words;
}

const clientText = (client) => client ?? "(anonymous)";
const NO_CLIENT = "-"; // the filter for requests without a client (chain429.requestlog.listing.NO_CLIENT)

function statusBadge(status) {
  const kind = status < 300 ? "ok" : status === 429 || status === 503 ? "cool" : "bad";
  return badge(String(status), kind);
}

function outcomeBadge(token) {
  if (token === "200") return badge(token, "ok");
  if (token.startsWith("skip:")) return badge(token, "neutral");
  if (token === "429" || token === "402") return badge(token, "cool");
  return badge(token, "bad");
}

function select(id, label, options, value) {
  const input = h("select", { id }, options.map(([v, text]) => h("option", { value: v }, text)));
  input.value = value || options[0][0];
  return h("div", { class: "field" }, h("label", { for: id }, label), input);
}

async function showList(view, ctx) {
  const params = ctx.route.params;
  listHash = location.hash;
  const chosen = Object.fromEntries(FILTERS.map((f) => [f, params.get(f) || ""]));
  const cursor = params.get("cursor") || "";
  // `#/requests?limit=N` changes the page size (1 to 1000, as the API allows).
  const pageSize = Math.min(1000, Math.max(1, Number(params.get("limit")) || PAGE_SIZE));
  const results = h("div", null, h("p", { class: "loading" }, "Loading…"));
  let names = { chains: [], providers: [], clients: [] };
  try {
    const { config } = await readConfig(ctx.signal);
    names = {
      chains: (config.chains || []).map((c) => c.name),
      providers: (config.providers || []).map((p) => p.id),
      clients: (config.clients || []).map((c) => c.name),
    };
  } catch (err) {
    if (err.name === "AbortError") return;
  }
  let vocab;
  try {
    vocab = await vocabulary(ctx.signal);
  } catch {
    return; // aborted: the user left
  }
  const keep = (list, value) => (value && !list.includes(value) ? [...list, value] : list);
  const status = h("input", { id: "filter-status", type: "number", min: "100", max: "599", value: chosen.status, placeholder: "any" });
  const form = h("form", { class: "card", novalidate: true, on: { submit: (event) => {
    event.preventDefault();
    const next = {};
    for (const name of FILTERS) {
      const value = form.querySelector(`#filter-${name}`).value.trim();
      if (value) next[name] = value;
    }
    cursors.length = 0;
    ctx.go(`#/requests${query(next)}`);
  } } },
  h("div", { class: "form-grid" },
    select("filter-range", "Time", RANGES, chosen.range || "24h"),
    select("filter-client", "Client", [["", "any"], [NO_CLIENT, "(anonymous)"],
      ...keep(names.clients, chosen.client === NO_CLIENT ? "" : chosen.client).map((c) => [c, c])], chosen.client),
    select("filter-endpoint", "Endpoint", [["", "any"], ...keep(vocab.endpoints, chosen.endpoint).map((e) => [e, e])], chosen.endpoint),
    select("filter-chain", "Chain", [["", "any"], ...keep(names.chains, chosen.chain).map((c) => [c, c])], chosen.chain),
    select("filter-provider", "Answered by", [["", "any"], ...keep(names.providers, chosen.provider).map((p) => [p, p])], chosen.provider),
    h("div", { class: "field" }, h("label", { for: "filter-status" }, "HTTP status"), status),
    select("filter-outcome", "Outcome", [["", "any"], ...keep(vocab.outcomes, chosen.outcome).map((o) => [o, o])], chosen.outcome),
    h("div", { class: "submit" }, h("button", { type: "submit", class: "primary" }, "Apply"))));
  fill(view, h("div", { class: "row spread" }, h("h1", null, "Requests"),
    button("Refresh", () => ctx.go(location.hash))), form, results);

  const filters = { since: chosen.range || "24h", client: chosen.client, endpoint: chosen.endpoint, chain: chosen.chain,
    provider: chosen.provider, status: chosen.status, outcome: chosen.outcome, limit: pageSize, cursor };
  let page;
  try {
    page = (await get(`/v1/stats/requests${query(filters)}`, { signal: ctx.signal })).data;
  } catch (err) {
    if (err.name === "AbortError") return;
    const off = err.code === "request_log_disabled";
    fill(results, banner(off ? "info" : "error", off ? "The request log is off on this server." : `Could not read the log: ${err.message}`));
    return;
  }
  if (!ctx.alive()) return;
  const base = Object.fromEntries(FILTERS.filter((f) => chosen[f]).map((f) => [f, chosen[f]]));
  if (params.get("limit")) base.limit = pageSize;
  const older = () => {
    cursors.push(cursor);
    ctx.go(`#/requests${query({ ...base, cursor: page.next_cursor })}`);
  };
  const newer = () => {
    const previous = cursors.pop() || "";
    ctx.go(`#/requests${query({ ...base, cursor: previous })}`);
  };
  const rows = page.data.map((r) => h("tr", { dataset: { id: r.id } },
    h("td", { class: "nowrap" }, h("a", { href: `#/requests/${seg(r.id)}`, "aria-label": `Request ${r.id}` }, when(r.time_ms))),
    h("td", { class: ["break", r.client ? null : "muted"] }, clientText(r.client)),
    h("td", { class: "small" }, r.endpoint ?? "chat"),
    h("td", { class: "break" }, r.chain ?? "–"),
    h("td", { class: "break mono small" }, r.provider ? `${r.provider}/${r.model}` : "–"),
    h("td", null, statusBadge(r.status)),
    h("td", { class: "small" }, r.outcome),
    h("td", { class: "num" }, num(r.attempts)),
    h("td", { class: "num" }, ms(r.latency_ms)),
    h("td", { class: "num hide-narrow" }, num(r.total_tokens)),
    h("td", { class: "num hide-narrow", title: r.cost_estimated ? "from estimated tokens" : null },
      r.cost_usd === null || r.cost_usd === undefined ? "–" : `${r.cost_estimated ? "~" : ""}${usd(r.cost_usd)}`),
    h("td", { class: "hide-narrow" }, r.stream ? "stream" : "")));
  fill(results,
    page.data.length
      ? table(["Time", "Client", "Endpoint", "Chain", "Answered by", "Status", "Outcome", { label: "Calls", class: "num" },
        { label: "Latency", class: "num" }, { label: "Tokens", class: "num hide-narrow" },
        { label: "Cost", class: "num hide-narrow" }, { label: "", class: "hide-narrow" }], rows,
      { caption: `Newest first, ${pageSize} a page; open a request to see its attempt trail`, className: "requests-table", stacked: true })
      : h("p", { class: "empty" }, "No requests match."),
    h("div", { class: "row" },
      button("← Newer", newer, { disabled: !cursor }),
      button("Older →", older, { disabled: !page.next_cursor, id: "older" })));
}

async function showOne(view, ctx, id) {
  fill(view, h("p", null, h("a", { href: listHash }, "← Requests")), h("p", { class: "loading" }, "Loading…"));
  let r;
  try {
    r = (await get(`/v1/stats/requests/${seg(id)}`, { signal: ctx.signal })).data;
  } catch (err) {
    if (err.name === "AbortError") return;
    fill(view, h("p", null, h("a", { href: listHash }, "← Requests")),
      banner("error", err.status === 404 ? `No request ${id} in the log.` : `Could not read it: ${err.message}`));
    return;
  }
  if (!ctx.alive()) return;
  const trail = r.trail.map((a) => h("tr", null,
    h("td", { class: "num" }, a.order),
    h("td", { class: "mono break" }, `${a.provider}/${a.model}`),
    h("td", null, outcomeBadge(a.outcome)),
    h("td", { class: "num" }, a.status ?? "–"),
    h("td", { class: "num" }, ms(a.latency_ms)),
    h("td", { class: "nowrap" }, a.cooldown_ms ? duration(a.cooldown_ms) : "–"),
    h("td", { class: "break small" }, a.reason || "")));
  fill(view,
    h("p", null, h("a", { href: listHash }, "← Requests")),
    h("h1", { class: "break" }, `Request ${r.id}`),
    h("div", { class: "card" }, facts([
      ["Time", when(r.time_ms)],
      ["Status", [statusBadge(r.status), " ", r.outcome]],
      ["Chain", `${r.chain ?? "–"}${r.route ? ` (chosen by ${r.route})` : ""}`],
      ["Client", clientText(r.client)],
      ["Endpoint", r.endpoint ?? "chat"],
      ["Model asked for", r.route === "alias" && r.requested_model
        ? `${r.requested_model} (an alias of ${r.chain})` : r.requested_model ?? "–"],
      ["Answered by", r.provider ? `${r.provider}/${r.model}` : "nobody"],
      ["Upstream calls", num(r.attempts)],
      ["Latency", `${ms(r.latency_ms)}${r.ttft_ms !== null ? ` (first token after ${ms(r.ttft_ms)})` : ""}${r.queued_ms ? `, ${ms(r.queued_ms)} queued` : ""}`],
      ["Tokens", `${num(r.prompt_tokens)} prompt + ${num(r.completion_tokens)} completion${r.tokens_estimated ? " (estimated)" : ""}`],
      ["Cost", r.cost_usd === null || r.cost_usd === undefined ? "– (unpriced)" : `${usd(r.cost_usd)}${r.cost_estimated ? " (estimated)" : ""}`],
      ["Streamed", r.stream ? "yes" : "no"],
      ["Key", r.key_label ?? "–"],
    ])),
    h("h2", null, "Attempt trail"),
    r.trail.length
      ? table([{ label: "#", class: "num" }, "Entry", "Outcome", { label: "HTTP", class: "num" }, { label: "Latency", class: "num" }, "Cooldown set", "Reason"],
        trail, { caption: "Each entry the waterfall considered, in order; a skip made no call", className: "trail", stacked: true })
      : h("p", { class: "empty" }, "No entry was considered (the request was refused before the waterfall)."));
}

export default {
  id: "requests",
  title: "Requests",
  needs: "read",
  render(view, ctx) {
    const id = ctx.route.rest[0];
    (id ? showOne(view, ctx, id) : showList(view, ctx)).catch((err) => {
      if (err.name !== "AbortError") fill(view, banner("error", err.message));
    });
  },
};

// Overview: how the waterfall did over a time range, and whether the server is healthy.
//
// Reads /v1/stats/summary, /timeseries, /providers, /chains and /spend (by provider
// and by chain) for the range, /health, /v1/admin/status and /v1/admin/budgets (the paid budgets' day). It refreshes every 5 s; the new view replaces
// the old one in a single step once every answer is in, so nothing blinks.
//
// The fall-through rate is the share of the entries the waterfall considered
// that it passed over (a failed call or a skip), from the providers' attempt
// counts: the stats API counts attempts, not requests that fell through.

import { get, query } from "../api.js";
import { timeseriesChart } from "../chart.js";
import { badge, banner, clockTime, duration, facts, fill, h, ms, num, pct, rangedPage, table, usd, usdLeft, when } from "../dom.js";

const REFRESH_MS = 5000;
const CLIENT_ERRORS = new Set(["400", "422"]); // the request was wrong: no fall-through

function card(label, value, sub, id) {
  return h("div", { class: "card stat", id },
    h("div", { class: "label" }, label), h("div", { class: "value" }, value), h("div", { class: "sub" }, sub || ""));
}

// One line per paid budget: what is left of it today, and when it starts again.
function budgetFacts(report) {
  return ((report && report.budgets) || []).map((b) => [
    b.client ? `Paid budget: ${b.client}` : "Paid budget",
    `${usdLeft(b.left_usd)} of ${usd(b.cap_usd)} left today (${usd(b.spent_usd)} spent, ` +
      `${usd(b.reserved_usd)} reserved) · resets ${when(b.resets_at)}`,
  ]);
}

function fallThrough(providers) {
  let considered = 0;
  let passed = 0;
  for (const row of providers) {
    for (const [token, count] of Object.entries(row.attempts.outcomes || {})) {
      considered += count;
      if (token !== "200" && !CLIENT_ERRORS.has(token)) passed += count;
    }
  }
  return { considered, passed };
}

/** A row's cost cell from a spend answer by `key`: `~` when partly estimated, – when nothing priced. */
function costOf(spend, key) {
  const rows = new Map(((spend && spend.data) || []).map((r) => [r[key] ?? null, r]));
  return (name) => {
    const row = rows.get(name ?? null);
    return row ? `${row.estimated_usd ? "~" : ""}${usd(row.cost_usd)}` : "–";
  };
}

function providerTable(rows, cost) {
  if (!rows.length) return h("p", { class: "empty" }, "No requests in this range.");
  return table(
    ["Provider", { label: "Answered", class: "num" }, { label: "Calls", class: "num" },
      { label: "Skips", class: "num" }, { label: "429s", class: "num" }, { label: "Tokens", class: "num" },
      { label: "p50", class: "num" }, { label: "p95", class: "num" }, { label: "Cost", class: "num" }],
    rows.map((r) => h("tr", null,
      // The requests no provider answered (refused, exhausted) are a row too.
      h("td", { class: ["break", r.provider ? null : "muted"] }, r.provider ?? "(unanswered)"),
      h("td", { class: "num" }, num(r.requests)),
      h("td", { class: "num" }, num(r.attempts.calls)),
      h("td", { class: "num" }, num(r.attempts.skips)),
      h("td", { class: "num" }, num((r.attempts.outcomes || {})["429"] || 0)),
      h("td", { class: "num" }, num(r.tokens.total)),
      h("td", { class: "num" }, ms(r.latency_ms.p50)),
      h("td", { class: "num" }, ms(r.latency_ms.p95)),
      h("td", { class: "num" }, cost(r.provider)))),
    { caption: "Per provider: requests it answered, and every call and skip the waterfall made on it", stacked: true });
}

function chainTable(rows, cost) {
  if (!rows.length) return h("p", { class: "empty" }, "No requests in this range.");
  return table(
    ["Chain", { label: "Requests", class: "num" }, { label: "Success", class: "num" },
      { label: "Errors", class: "num" }, { label: "Tokens", class: "num" },
      { label: "p50", class: "num" }, { label: "p95", class: "num" }, { label: "Cost", class: "num" }],
    rows.map((r) => h("tr", null,
      h("td", { class: ["break", r.chain ? null : "muted"] }, r.chain ?? "(no chain)"),
      h("td", { class: "num" }, num(r.requests)),
      h("td", { class: "num" }, pct(r.successes, r.requests)),
      h("td", { class: "num" }, num(r.errors)),
      h("td", { class: "num" }, num(r.tokens.total)),
      h("td", { class: "num" }, ms(r.latency_ms.p50)),
      h("td", { class: "num" }, ms(r.latency_ms.p95)),
      h("td", { class: "num" }, cost(r.chain)))),
    { caption: "Per chain", stacked: true });
}

function healthView(health, status, budgets) {
  const problems = [];
  const rejected = health.config_error;
  if (rejected) {
    const errors = (status && status.last_error) || rejected.errors || [];
    problems.push(banner("error",
      `The config file on disk was rejected ${when(rejected.rejected_at * 1000)}; the server keeps running the last good config.`,
      errors.length ? h("ul", null, errors.map((e) => h("li", null,
        `${e.line ? `line ${e.line}: ` : ""}${e.path ? `${e.path}: ` : ""}${e.message}`))) : null));
  }
  const log = health.log;
  if (log && log.dropped) {
    problems.push(banner("warn", `The request log dropped ${num(log.dropped)} record(s): they will never be written.`));
  }
  if (log && log.last_error) problems.push(banner("error", `The request log's database fails: ${log.last_error}`));
  return h("div", { class: "card" },
    h("div", { class: "row spread" }, h("h2", { class: "nomargin" }, "Health"),
      badge(health.status, health.status === "ok" ? "ok" : "bad")),
    problems,
    facts([
      ["Version", health.version],
      ["Up for", duration(health.uptime_s * 1000)],
      ["Config generation", `${health.config_generation} (loaded ${when(health.config_loaded_at * 1000)})`],
      status && status.config_path ? ["Config file", status.config_path] : null,
      log ? ["Request log", `${num(log.written)} written · ${num(log.pending)} pending · ${num(log.dropped)} dropped`] : ["Request log", "off"],
      ...budgetFacts(budgets),
    ]));
}

export default {
  id: "overview",
  title: "Overview",
  needs: "read",
  render(view, ctx) {
    const { range, body, updated } = rangedPage(view, ctx, "Overview", "overview");

    const since = { since: range[0] };
    ctx.poll(async () => {
      const signal = ctx.signal;
      // Settled, not raced: a failed part must not leave another's failure unheard.
      const stats = Promise.all([
        get(`/v1/stats/summary${query(since)}`, { signal }),
        get(`/v1/stats/timeseries${query(since)}`, { signal }),
        get(`/v1/stats/providers${query(since)}`, { signal }),
        get(`/v1/stats/chains${query(since)}`, { signal }),
        // An older server has no spend: the card says nothing rather than failing the page.
        get(`/v1/stats/spend${query(since)}`, { signal }).catch(() => ({ data: null })),
        get(`/v1/stats/spend${query({ ...since, by: "chain" })}`, { signal }).catch(() => ({ data: null })),
      ]).then((answers) => ({ answers }), (error) => ({ error }));
      const [health, status, budgets, read] = await Promise.all([
        get("/health", { signal }).then((r) => r.data),
        get("/v1/admin/status", { signal }).then((r) => r.data).catch(() => null),
        get("/v1/admin/budgets", { signal }).then((r) => r.data).catch(() => null),
        stats,
      ]);
      let parts;
      try {
        if (read.error) throw read.error;
        const [summary, series, providers, chains, spend, chainSpend] = read.answers.map((r) => r.data);
        const { considered, passed } = fallThrough(providers.data);
        parts = [
          h("div", { class: "cards" },
            card("Requests", num(summary.requests), `${num(summary.errors)} failed`, "stat-requests"),
            card("Success rate", pct(summary.successes, summary.requests), `${num(summary.successes)} answered`, "stat-success"),
            card("Fall-through rate", pct(passed, considered),
              `${num(passed)} of ${num(considered)} entries passed over`, "stat-fallthrough"),
            card("Tokens", num(summary.tokens.total),
              `${num(summary.tokens.prompt)} prompt · ${num(summary.tokens.completion)} completion`, "stat-tokens"),
            card("Latency p50 / p95", `${ms(summary.latency_ms.p50)} / ${ms(summary.latency_ms.p95)}`,
              `average ${ms(summary.latency_ms.avg)}`, "stat-latency"),
            spend ? card("Spend", usd(spend.cost_usd),
              `${num(spend.requests)} priced answer${spend.requests === 1 ? "" : "s"}${spend.estimated_usd ? ` · ${usd(spend.estimated_usd)} estimated` : ""}`,
              "stat-spend") : null),
          h("div", { class: "card" },
            h("div", { class: "row spread" }, h("h2", { class: "nomargin" }, "Requests over time"),
              h("div", { class: "legend" },
                h("span", null, h("span", { class: "swatch ok" }), "answered"),
                h("span", null, h("span", { class: "swatch bad" }), "failed"),
                h("span", null, h("span", { class: "swatch line" }), "p95 latency (right scale)"))),
            series.data.length ? timeseriesChart(series.data, series.bucket_ms, range[2], body.clientWidth - 34) : h("p", { class: "empty" }, "No data.")),
          h("h2", null, "Providers"), providerTable(providers.data, costOf(spend, "provider")),
          h("h2", null, "Chains"), chainTable(chains.data, costOf(chainSpend, "chain")),
        ];
      } catch (err) {
        if (err.name === "AbortError") throw err;
        const off = err.code === "request_log_disabled";
        parts = [banner(off ? "info" : "error", off
          ? "The request log is off on this server, so there are no statistics. Health is below."
          : `Statistics could not be read: ${err.message}`)];
      }
      if (!ctx.alive()) return;
      fill(body, parts, h("h2", null, "Server"), healthView(health, status, budgets));
      updated.textContent = `updated ${clockTime(Date.now())}`;
    }, REFRESH_MS);
  },
};

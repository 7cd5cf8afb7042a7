// Clients: who used the proxy over a time range, what they may use, and what it cost.
//
// One row per configured client from `/v1/admin/clients` (its chains, its own
// limits with what is left of them now from `usage`, its paid budget per day),
// joined with `/v1/stats/clients` (requests, errors, its own 429s, tokens,
// latency) and `/v1/stats/spend?by=client` (cost) over the range, and
// `/v1/admin/budgets` (what its budget has left today). The anonymous callers
// (`apiKeys` and keyless requests: client null) are one row of their own.
// Keys never reach the page: the admin API shows a client's key as the `${VAR}`
// reference written in the config. Read-only: clients are added, changed and
// removed with `chain429 client add|set|rotate|remove` (or the admin API).

import { get, query, seg } from "../api.js";
import { banner, clockTime, fill, h, ms, num, pct, rangedPage, relative, table, usd, usdLeft } from "../dom.js";

const REFRESH_MS = 5000;
const ANONYMOUS = "(anonymous)";
const NO_CLIENT = "-"; // the requests filter for them (chain429.requestlog.listing.NO_CLIENT)
const LIMITS = [
  ["requestsPerMinute", "requests", "minute", "req/min"],
  ["tokensPerMinute", "tokens", "minute", "tok/min"],
  ["requestsPerDay", "requests", "day", "req/day"],
  ["tokensPerDay", "tokens", "day", "tok/day"],
];

/** A client's own limits, each with what is left of it now and when that resets. */
function limitsCell(client) {
  const usage = client.usage || [];
  const lines = LIMITS.filter(([field]) => client[field] !== undefined && client[field] !== null).map(([field, kind, window, short]) => {
    const now = usage.find((u) => u.kind === kind && u.window === window);
    const left = now ? `: ${num(now.remaining)} left` : "";
    const reset = now && now.remaining < now.limit ? ` (resets ${relative(now.reset_at)})` : "";
    return h("li", null, `${num(client[field])} ${short}${left}`, reset ? h("span", { class: "muted" }, reset) : null);
  });
  return lines.length ? h("ul", { class: "plain" }, lines) : h("span", { class: "muted" }, "none");
}

function budgetCell(client, budget) {
  if (client.paidBudgetUsdPerDay === undefined || client.paidBudgetUsdPerDay === null) {
    return h("span", { class: "muted" }, "none");
  }
  return [`${usd(client.paidBudgetUsdPerDay)}/day`,
    budget ? h("div", { class: "small muted" }, `${usdLeft(budget.left_usd)} left today`) : null];
}

/** What a client's answers cost, the estimated part said as the overview says it. */
function costCell(spend) {
  if (!spend) return "–";
  return [usd(spend.cost_usd),
    spend.estimated_usd ? h("div", { class: "small muted" }, `${usd(spend.estimated_usd)} estimated`) : null];
}

function clientRow(row) {
  const { name, client, stats, spend, budget, removed } = row;
  const link = name === null
    ? h("a", { href: `#/requests?client=${NO_CLIENT}`, class: "muted", title: "Their requests" }, ANONYMOUS)
    : h("a", { href: `#/requests?client=${seg(name)}`, title: `${name}'s requests` }, name);
  return h("tr", { dataset: { client: name ?? "" } },
    h("td", null, link,
      client && client.key ? h("div", { class: "small muted mono", title: "The key, as the config names it" }, client.key) : null,
      removed ? h("div", { class: "small muted" }, "not in the config any more") : null),
    h("td", { class: "break" }, client ? (client.chains && client.chains.length ? client.chains.join(", ") : "all") : "–"),
    h("td", { class: "small" }, client ? limitsCell(client) : "–"),
    h("td", { class: "nowrap" }, client ? budgetCell(client, budget) : "–"),
    h("td", { class: "num" }, num(stats ? stats.requests : 0)),
    h("td", { class: "num" }, stats ? pct(stats.successes, stats.requests) : "–"),
    h("td", { class: "num" }, num(stats ? stats.errors : 0)),
    h("td", { class: "num" }, num(stats ? stats.rate_limited : 0)),
    h("td", { class: "num" }, num(stats ? stats.tokens.total : 0)),
    h("td", { class: "num" }, stats ? ms(stats.latency_ms.p50) : "–"),
    h("td", { class: "num" }, costCell(spend)));
}

/** The configured clients, then those only the log knows (removed since), then the anonymous callers. */
function joined(clients, stats, spend, budgets) {
  const key = (name) => name ?? "\u0000";
  const statsOf = new Map(stats.map((s) => [key(s.client), s]));
  const spendOf = new Map(spend.map((s) => [key(s.client), s]));
  const budgetOf = new Map(budgets.filter((b) => b.client).map((b) => [b.client, b]));
  const rows = clients.map((c) => ({ name: c.name, client: c }));
  const configured = new Set(clients.map((c) => c.name));
  const logged = [...new Set([...statsOf.keys(), ...spendOf.keys()])];
  for (const name of logged) {
    if (name !== "\u0000" && !configured.has(name)) rows.push({ name, client: null, removed: true });
  }
  if (logged.includes("\u0000")) rows.push({ name: null, client: null });
  return rows.map((r) => ({ ...r, stats: statsOf.get(key(r.name)), spend: spendOf.get(key(r.name)), budget: budgetOf.get(r.name) }));
}

function emptyState() {
  return banner("info", h("strong", null, "No clients yet. "),
    "A client is one person or app with a key of its own, the chains it may use and limits of its own; " +
    "its name follows each of its requests into the log and these numbers. Add one with ",
    h("code", null, "chain429 client add NAME"),
    " (it prints the new key once, and keeps it in the .env beside the config).");
}

export default {
  id: "clients",
  title: "Clients",
  needs: "read",
  render(view, ctx) {
    const { range, body, updated } = rangedPage(view, ctx, "Clients", "clients");

    const since = { since: range[0] };
    ctx.poll(async () => {
      const signal = ctx.signal;
      const [clients, usage, budgets] = await Promise.all([
        get("/v1/admin/clients", { signal }).then((r) => r.data.data),
        // Settled, not raced: a request log that is off still leaves the clients to show.
        Promise.all([
          get(`/v1/stats/clients${query(since)}`, { signal }),
          get(`/v1/stats/spend${query({ ...since, by: "client" })}`, { signal }),
        ]).then(([stats, spend]) => ({ stats: stats.data.data, spend: spend.data.data }), (error) => ({ error })),
        get("/v1/admin/budgets", { signal }).then((r) => r.data.budgets || []).catch(() => []),
      ]);
      if (usage.error && usage.error.name === "AbortError") throw usage.error;
      if (!ctx.alive()) return;
      const rows = joined(clients, usage.stats || [], usage.spend || [], budgets);
      const off = usage.error && usage.error.code === "request_log_disabled";
      fill(body,
        usage.error ? banner(off ? "info" : "error", off
          ? "The request log is off on this server, so there is no usage to show."
          : `Usage could not be read: ${usage.error.message}`) : null,
        clients.length ? null : emptyState(),
        rows.length ? table(
          ["Client", "Chains", "Own limits (left now)", "Paid budget",
            { label: "Requests", class: "num" }, { label: "Success", class: "num" },
            { label: "Errors", class: "num" }, { label: "Own 429s", class: "num" },
            { label: "Tokens", class: "num" }, { label: "p50", class: "num" }, { label: "Cost", class: "num" }],
          rows.map(clientRow),
          { caption: `Over the last ${range[1]}; open a client to see its requests. ${ANONYMOUS}: apiKeys and keyless callers`,
            className: "clients-table", stacked: true }) : null,
        h("p", { class: "small muted" }, "Keys are never shown: the config names each one as a ${VAR} reference. ",
          "Add, change, rotate or remove clients with ", h("code", null, "chain429 client"), " (docs/clients.md)."));
      updated.textContent = `updated ${clockTime(Date.now())}`;
    }, REFRESH_MS);
  },
};

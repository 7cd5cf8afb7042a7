// Live limits: every chain entry and quota bucket from /v1/ratelimits, every 2 s.
//
// Countdowns tick every quarter second from the server's own `until` and
// `reset_at`, corrected by the clock difference the answer reveals (each
// block says both when it ends and how long it has left). Rows are updated in
// place, so a focused "Clear" button stays focused across refreshes. Clearing
// is `POST /v1/admin/limits/clear`, as `chain429 limits clear PROVIDER/MODEL`;
// pausing and resuming are `POST /v1/admin/entries/pause|resume`, as
// `chain429 entry pause|resume PROVIDER[/MODEL]`. A row paused with its whole
// provider offers to resume the provider: resuming the entry alone would not
// bring it back.

import { api, get } from "../api.js";
import { badge, banner, button, duration, fill, h, labelCells, num, setText, syncRows, table, when } from "../dom.js";

const REFRESH_MS = 2000;
const ENTRY_COLUMNS = ["Chain", "Entry", "State", "Why", "Ends", { label: "In flight", class: "num" }, ""];
const BUCKET_COLUMNS = ["Bucket", "Provider", "Quota", "Resets", "Known from", { label: "In flight", class: "num" }];
const BLOCK_COLUMNS = ["Scope key", "Scope", "Reason", "Detail", "Ends", ""];
const CLEARABLE = new Set(["cooling", "unhealthy", "probing", "broken"]);
const SOURCES = {
  header: "provider's rate-limit headers",
  body: "the provider's error body (retry hint)",
  status: "the HTTP status",
  default: "no hint: the default cooldown",
  manual: "your configured limit (rateLimits)",
  pause: "a person (chain429 entry pause)",
};

function sourceText(source) {
  return source ? SOURCES[source] || source : "";
}

/** The browser's clock minus the server's, from blocks that state both `until` and `remaining_ms`. */
function clockSkew(report, receivedAt) {
  for (const block of report.blocks || []) {
    const until = Date.parse(block.until);
    if (!Number.isNaN(until) && typeof block.remaining_ms === "number") {
      return receivedAt - (until - block.remaining_ms);
    }
  }
  return 0;
}

function countdownCell() {
  return h("td", { class: "countdown nowrap" }, h("span", { class: "left" }), h("br"), h("span", { class: "at small muted" }));
}

/** Point a countdown cell at a server moment (ISO) or clear it. */
function aim(cell, iso, skew) {
  const at = iso ? Date.parse(iso) : NaN;
  if (Number.isNaN(at)) {
    delete cell.dataset.deadline;
    setText(cell.querySelector(".left"), "–");
    setText(cell.querySelector(".at"), "");
    return;
  }
  cell.dataset.deadline = String(at + skew);
  setText(cell.querySelector(".at"), when(at + skew));
}

function tick(root) {
  const now = Date.now();
  for (const cell of root.querySelectorAll("[data-deadline]")) {
    const left = Number(cell.dataset.deadline) - now;
    setText(cell.querySelector(".left"), left > 0 ? `in ${duration(left)}` : "now");
  }
}

function quotaText(quota) {
  const left = quota.remaining === null ? "?" : num(quota.remaining);
  const of = quota.limit === null ? "" : ` of ${num(quota.limit)}`;
  return `${quota.kind} per ${quota.window}: ${left}${of} left`;
}

export default {
  id: "limits",
  title: "Live limits",
  needs: "proxy",
  render(view, ctx) {
    const canClear = ctx.access.write;
    const status = h("div");
    const picks = h("div", { class: "next-picks" });
    const entryRows = h("tbody");
    const bucketRows = h("tbody");
    const blockRows = h("tbody");
    const noBlocks = h("p", { class: "empty hidden", id: "no-blocks" }, "No blocks in force: every entry may be asked.");
    let skew = 0;

    async function steer(verb, provider, model) {
      const what = model ? `${provider}/${model}` : provider;
      try {
        const path = verb === "pause" ? "/v1/admin/entries/pause" : "/v1/admin/entries/resume";
        const { data } = await api("POST", path, { json: model ? { provider, model } : { provider } });
        if (verb === "pause") ctx.toast(data.new ? `Paused ${what}.` : `${what} was paused already.`);
        else ctx.toast(data.resumed ? `Resumed ${what}.` : `${what} was not paused.`);
      } catch (err) {
        ctx.toast(`Could not ${verb} ${what}: ${err.message}`, "error");
      }
      await refresh();
    }

    async function clear(provider, model) {
      const what = model ? `${provider}/${model}` : provider;
      try {
        const { data } = await api("POST", "/v1/admin/limits/clear", { json: model ? { provider, model } : { provider } });
        ctx.toast(`Cleared ${data.cleared} cooldown${data.cleared === 1 ? "" : "s"} of ${what}.`);
      } catch (err) {
        ctx.toast(`Could not clear ${what}: ${err.message}`, "error");
      }
      await refresh();
    }

    function entryRow() {
      const clearButton = button("Clear", () => {}, { class: "clear" });
      const pauseButton = button("Pause", () => {}, { class: "pause" });
      for (const b of [clearButton, pauseButton]) {
        if (!canClear) {
          b.disabled = true;
          b.title = ctx.whyReadOnly || "Needs an admin key";
        }
      }
      return labelCells(h("tr", null, h("td", { class: "break" }), h("td", { class: "break" }), h("td"),
        h("td", { class: "small" }), countdownCell(), h("td", { class: "num" }), h("td", { class: "actions" }, clearButton, pauseButton)), ENTRY_COLUMNS);
    }

    function updateEntry(row, entry) {
      const [chain, label, state, why, until, inFlight, actions] = row.children;
      setText(chain, entry.chain);
      setText(label, `${entry.provider}/${entry.model}`);
      if (state.dataset.state !== entry.state) {
        fill(state, badge(entry.state, entry.state));
        state.dataset.state = entry.state;
      }
      const set = entry.paused ? `, since ${when(entry.paused.since)}`
        : entry.source ? ` — set by ${sourceText(entry.source)}` : "";
      setText(why, entry.reason ? `${entry.reason}${set}` : set.replace(" — set by ", "set by "));
      aim(until, entry.until, skew);
      setText(inFlight, num(entry.in_flight));
      const [clearButton, pauseButton] = actions.children;
      clearButton.classList.toggle("hidden", !CLEARABLE.has(entry.state));
      clearButton.setAttribute("aria-label", `Clear the cooldown of ${entry.provider}/${entry.model}`);
      clearButton.onclick = canClear ? () => clear(entry.provider, entry.model) : null;
      const named = `${entry.provider}/${entry.model}`;
      if (!entry.paused) {
        setText(pauseButton, "Pause");
        pauseButton.setAttribute("aria-label", `Pause ${named}`);
        pauseButton.onclick = canClear ? () => steer("pause", entry.provider, entry.model) : null;
      } else if (entry.paused.scope === "provider") {
        setText(pauseButton, "Resume provider");
        pauseButton.setAttribute("aria-label", `Resume provider ${entry.provider} (${named} is paused with it)`);
        pauseButton.onclick = canClear ? () => steer("resume", entry.provider, null) : null;
      } else {
        setText(pauseButton, "Resume");
        pauseButton.setAttribute("aria-label", `Resume ${named}`);
        pauseButton.onclick = canClear ? () => steer("resume", entry.provider, entry.model) : null;
      }
    }

    function bucketRow() {
      return labelCells(h("tr", null, h("td", { class: "break" }), h("td"), h("td"), countdownCell(), h("td", { class: "small" }), h("td", { class: "num" })), BUCKET_COLUMNS);
    }

    function updateBucket(row, item) {
      const [name, provider, quota, resets, source, inFlight] = row.children;
      setText(name, item.bucket.bucket);
      setText(provider, item.bucket.provider);
      setText(quota, item.quota ? quotaText(item.quota) : "nothing known yet");
      aim(resets, item.quota ? item.quota.reset_at : null, skew);
      setText(source, item.quota ? sourceText(item.quota.source) : "");
      setText(inFlight, num(item.bucket.in_flight));
    }

    function blockRow() {
      return labelCells(h("tr", null, h("td", { class: "break" }), h("td"), h("td"), h("td", { class: "small" }), countdownCell(), h("td", { class: "actions" })), BLOCK_COLUMNS);
    }

    function updateBlock(row, block) {
      const [key, scope, reason, detail, until, actions] = row.children;
      setText(key, block.key);
      setText(scope, block.scope);
      setText(reason, block.reason);
      setText(detail, `${block.detail || ""}${block.source ? ` — set by ${sourceText(block.source)}` : ""}`);
      aim(until, block.until, skew);
      if (block.scope === "provider" && !actions.firstChild) {
        const provider = block.key.slice(block.key.indexOf(":") + 1);
        const clearButton = button("Clear provider", () => clear(provider, null), {
          disabled: !canClear, title: canClear ? null : ctx.whyReadOnly,
        });
        actions.appendChild(clearButton);
      }
    }

    function showPicks(entries) {
      const chains = new Map();
      for (const entry of entries) {
        if (!chains.has(entry.chain)) chains.set(entry.chain, []);
        chains.get(entry.chain).push(entry);
      }
      fill(picks, [...chains].map(([chain, list]) => {
        const next = list.find((e) => e.state === "available");
        const skipped = next ? list.slice(0, list.indexOf(next)) : list;
        return h("div", { class: "card small", dataset: { chain } },
          h("div", null, h("strong", null, chain), " → ",
            next ? h("span", { class: "mono" }, `${next.provider}/${next.model}`) : badge("nothing available", "bad")),
          skipped.length ? h("div", { class: "muted" }, `skips ${skipped.map((e) => `${e.provider}/${e.model} (${e.state})`).join(", ")}`) : null);
      }));
    }

    async function refresh() {
      const { data } = await get("/v1/ratelimits", { signal: ctx.signal });
      if (!ctx.alive()) return;
      skew = clockSkew(data, Date.now());
      fill(status);
      showPicks(data.entries);
      syncRows(entryRows, data.entries, (e) => `${e.chain}\u0000${e.provider}\u0000${e.model}`, entryRow, updateEntry);
      const quotaRows = [];
      for (const bucket of data.buckets) {
        if (!bucket.quotas.length) quotaRows.push({ bucket, quota: null, key: bucket.bucket });
        for (const quota of bucket.quotas) quotaRows.push({ bucket, quota, key: `${bucket.bucket}\u0000${quota.kind}\u0000${quota.window}` });
      }
      syncRows(bucketRows, quotaRows, (r) => r.key, bucketRow, updateBucket);
      syncRows(blockRows, data.blocks, (b) => b.key, blockRow, updateBlock);
      noBlocks.classList.toggle("hidden", data.blocks.length > 0);
      tick(view);
    }

    fill(view,
      h("div", { class: "row spread" }, h("h1", null, "Live limits"), h("span", { class: "updated" }, `refreshed every ${REFRESH_MS / 1000} s`)),
      status,
      h("h2", null, "Next pick per chain"),
      picks,
      h("h2", null, "Entries"),
      table(ENTRY_COLUMNS, entryRows,
        { caption: "Every entry of every chain; an entry in several chains is listed in each", className: "entries-table", stacked: true }),
      h("h2", null, "Quota buckets"),
      table(BUCKET_COLUMNS, bucketRows,
        { caption: "A quota is counted where the provider counts it: entries of one bucket are limited together", stacked: true }),
      h("h2", null, "Blocks in force"),
      table(BLOCK_COLUMNS, blockRows, { stacked: true }),
      noBlocks);

    ctx.poll(async () => {
      try {
        await refresh();
      } catch (err) {
        if (err.name === "AbortError") throw err;
        fill(status, banner("error", `Could not read the rate limits: ${err.message}`));
      }
    }, REFRESH_MS);
    ctx.every(() => tick(view), 250);
  },
};

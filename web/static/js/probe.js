// Testing entries: `POST /v1/test/chain/<name>` or `/v1/test/provider/<id>`, shown live.
//
// The request asks for server-sent events, so each entry's result shows as
// soon as that entry is done, and with streaming each entry's text appears
// word by word as the provider sends it. Same as `chain429 chain test NAME
// [--stream]` and `chain429 provider test ID [--stream]`.

import { postForEvents, readEvents } from "./api.js";
import { badge, banner, fill, h, ms, num } from "./dom.js";

function panel(entry) {
  const state = h("span", { class: "state" }, badge("waiting…", "neutral"));
  const said = h("div", { class: "said", "aria-live": "polite" });
  const detail = h("div", { class: "detail small muted" });
  const root = h("div", { class: "probe-entry", dataset: { index: entry.index } },
    h("div", { class: "row spread" }, h("span", { class: "mono break" }, `${entry.provider}/${entry.model}`), state),
    said, detail);
  return { root, state, said, detail };
}

function describe(result) {
  const parts = [];
  if (result.status !== null && result.status !== undefined) parts.push(`HTTP ${result.status}`);
  parts.push(ms(result.latency_ms));
  if (result.model_reported) parts.push(`model ${result.model_reported}`);
  const tokens = result.tokens || {};
  if (tokens.prompt !== null && tokens.prompt !== undefined) {
    parts.push(`${num(tokens.prompt)} + ${num(tokens.completion)} tokens`);
  }
  if (result.reason) parts.push(result.reason);
  if (result.cooldown_until) parts.push(`cooling down until ${new Date(result.cooldown_until * 1000).toLocaleString()}`);
  return parts.join(" · ");
}

/**
 * Run one test into `target`. `path` is the test route; resolves when done.
 * Returns the final answer (the JSON a non-streaming caller would get).
 */
export async function runProbe(target, path, { stream = false, signal } = {}) {
  const summary = h("p", { class: "small", role: "status" }, stream ? "Testing with streaming calls…" : "Testing…");
  const list = h("div", { class: "probe" });
  fill(target, summary, list);
  const panels = new Map();
  let final = null;
  try {
    const response = await postForEvents(`${path}${stream ? "?stream=true" : ""}`, { signal });
    await readEvents(response, (event) => {
      if (!event || typeof event !== "object") return;
      if (event.type === "start") {
        fill(list, event.entries.map((entry) => {
          const p = panel(entry);
          panels.set(entry.index, p);
          return p.root;
        }));
      } else if (event.type === "delta") {
        const p = panels.get(event.index);
        if (p) p.said.append(document.createTextNode(event.text));
      } else if (event.type === "result") {
        const p = panels.get(event.index);
        if (!p) return;
        const ok = event.result === "ok";
        fill(p.state, badge(ok ? "ok" : `failed: ${event.result}`, ok ? "ok" : "bad"));
        if (!stream || !p.said.textContent) p.said.textContent = event.text || "";
        p.detail.textContent = describe(event);
        p.root.dataset.result = event.result;
      } else if (event.type === "done") {
        final = event;
        const total = event.entries.length;
        summary.textContent = total
          ? `${event.working} of ${total} ${total === 1 ? "entry works" : "entries work"}${stream ? " (streaming)" : ""}.`
          : "Nothing to test: no chain uses it.";
      }
    });
  } catch (err) {
    if (err.name === "AbortError") return null;
    fill(target, banner("error", `The test failed: ${err.message}`));
    return null;
  }
  return final;
}

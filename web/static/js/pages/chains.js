// Chains: list, create, delete; add, remove and reorder entries; set the default; test.
//
// Every change is one admin API write with If-Match (see edits.js), saved at
// once and shown as the server then has it: the page reads the config again
// after each write. CLI equivalents: `chain429 chain add|remove|move|test`,
// `chain429 chain set` (the entries of a chain) and `chain429 chain default`.
// Reordering works by dragging an entry, or with its ↑ and ↓ buttons.

import { get, seg } from "../api.js";
import { badge, banner, button, fill, h } from "../dom.js";
import { edit, readConfig } from "../edits.js";
import { runProbe } from "../probe.js";

const entryLabel = (e) => `${e.provider}/${e.model}`;
// A chain serves one kind of request (docs/api.md#endpoints-and-chain-kinds).
const KINDS = ["chat", "embeddings"];

function modelOptions(config, models) {
  const known = new Set();
  for (const chain of config.chains || []) for (const e of chain.entries || []) known.add(e.model);
  for (const m of models) if (m.kind === "model") known.add(m.id);
  return [...known].sort();
}

/** Chains as a proxy key sees them: names and entries from /v1/ratelimits, read-only. */
function chainsFromLimits(report) {
  const chains = new Map();
  for (const e of report.entries) {
    if (!chains.has(e.chain)) chains.set(e.chain, { name: e.chain, entries: [] });
    chains.get(e.chain).entries.push({ provider: e.provider, model: e.model });
  }
  return [...chains.values()];
}

export default {
  id: "chains",
  title: "Chains",
  needs: "proxy",
  render(view, ctx) {
    const canEdit = ctx.access.write && ctx.access.adminRead;
    const why = ctx.whyReadOnly;
    const notice = h("div", { id: "chains-notice" });
    const list = h("div", { class: "chain-list", id: "chain-list" }, h("p", { class: "loading" }, "Loading…"));
    const creator = h("div");
    const state = { etag: null, path: null };
    let config = { chains: [], providers: [], settings: {} };
    let models = [];
    let states = new Map();
    let refocus = null; // what to focus once the list is drawn again
    let dragging = null;

    fill(view, h("h1", null, "Chains"), notice, creator, list,
      h("datalist", { id: "known-models" }));

    async function load() {
      const signal = ctx.signal;
      const [limits, listed] = await Promise.all([
        get("/v1/ratelimits", { signal }).then((r) => r.data),
        get("/v1/models", { signal }).then((r) => r.data.data).catch(() => []),
      ]);
      states = new Map(limits.entries.map((e) => [`${e.chain}\u0000${e.provider}\u0000${e.model}`, e.state]));
      models = listed;
      if (ctx.access.adminRead) {
        const read = await readConfig(signal);
        config = read.config;
        state.etag = read.etag;
        state.path = read.path;
      } else {
        config = { chains: chainsFromLimits(limits), providers: [], settings: {} };
      }
      if (!ctx.alive()) return;
      draw();
    }

    async function save(method, path, body, doing) {
      await edit(state, notice, method, path, body, doing);
      await load();
    }

    function putEntries(chain, entries, doing) {
      // The whole chain goes back (a PUT replaces it): its `kind` must not be lost.
      return save("PUT", `/v1/admin/chains/${seg(chain.name)}`, { ...chain, entries }, doing);
    }

    function move(chain, from, to, via) {
      if (to < 0 || to >= chain.entries.length || from === to) return;
      const entries = [...chain.entries];
      const [moved] = entries.splice(from, 1);
      entries.splice(to, 0, moved);
      refocus = via ? { chain: chain.name, label: entryLabel(moved), via } : null;
      return putEntries(chain, entries, `Moved ${entryLabel(moved)} to position ${to + 1} of ${chain.name}`);
    }

    function entryItem(chain, entry, index, isOnly) {
      const label = entryLabel(entry);
      const live = states.get(`${chain.name}\u0000${entry.provider}\u0000${entry.model}`);
      const up = button("↑", () => move(chain, index, index - 1, "up"), {
        class: "icon", "aria-label": `Move ${label} up`, disabled: !canEdit || index === 0, dataset: { focus: "up" },
      });
      const down = button("↓", () => move(chain, index, index + 1, "down"), {
        class: "icon", "aria-label": `Move ${label} down`, disabled: !canEdit || index === chain.entries.length - 1,
        dataset: { focus: "down" },
      });
      const remove = button("✕", () => {
        const entries = chain.entries.filter((_, i) => i !== index);
        putEntries(chain, entries, `Removed ${label} from ${chain.name}`);
      }, {
        class: "icon danger", "aria-label": `Remove ${label} from ${chain.name}`,
        disabled: !canEdit || isOnly, title: isOnly ? "A chain needs an entry: delete the chain instead" : null,
      });
      const item = h("li", { class: "entry", draggable: canEdit ? "true" : null, dataset: { label } },
        canEdit ? h("span", { class: "handle", "aria-hidden": "true", title: "Drag to reorder" }, "⠿") : null,
        h("span", { class: "pos" }, `${index + 1}.`),
        h("span", { class: "what mono" }, `${entry.provider}/`, h("wbr"), entry.model),
        entry.paid ? badge("paid", "warn") : null,
        live ? badge(live, live) : null,
        canEdit ? h("span", { class: "tools" }, up, down, remove) : null);
      if (canEdit) {
        item.addEventListener("dragstart", (event) => {
          dragging = { chain: chain.name, index };
          event.dataTransfer.effectAllowed = "move";
          event.dataTransfer.setData("text/plain", label);
          item.classList.add("dragging");
        });
        item.addEventListener("dragend", () => {
          dragging = null;
          item.classList.remove("dragging");
        });
        const after = (event) => event.offsetY > item.clientHeight / 2;
        item.addEventListener("dragover", (event) => {
          if (!dragging || dragging.chain !== chain.name) return;
          event.preventDefault();
          item.classList.toggle("drop-after", after(event));
          item.classList.toggle("drop-before", !after(event));
        });
        item.addEventListener("dragleave", () => item.classList.remove("drop-before", "drop-after"));
        item.addEventListener("drop", (event) => {
          if (!dragging || dragging.chain !== chain.name) return;
          event.preventDefault();
          item.classList.remove("drop-before", "drop-after");
          const from = dragging.index;
          let to = index + (after(event) ? 1 : 0);
          if (from < to) to -= 1;
          dragging = null;
          move(chain, from, to, null);
        });
      }
      return item;
    }

    function providerSelect(id) {
      return h("select", { id, required: true },
        (config.providers || []).map((p) => h("option", { value: p.id }, p.id)));
    }

    function addEntryForm(chain) {
      const key = chain.name.replace(/[^A-Za-z0-9_-]/g, "_");
      const provider = providerSelect(`add-provider-${key}`);
      provider.setAttribute("aria-label", `Provider of a new entry of ${chain.name}`);
      const model = h("input", {
        id: `add-model-${key}`, list: "known-models", placeholder: "model", required: true, autocomplete: "off",
        "aria-label": `Model of a new entry of ${chain.name}`,
      });
      return h("form", { class: "add-entry", novalidate: true, on: { submit: (event) => {
        event.preventDefault();
        const name = model.value.trim();
        if (!name) {
          model.focus();
          return;
        }
        putEntries(chain, [...chain.entries, { provider: provider.value, model: name }],
          `Added ${provider.value}/${name} to ${chain.name}`);
      } } },
      provider, model,
      h("button", { type: "submit" }, "Add entry"));
    }

    function chainCard(chain, defaultName) {
      const isDefault = chain.name === defaultName;
      const results = h("div", { class: "results" });
      const confirm = h("div");
      const testing = (stream) => () => runProbe(results, `/v1/test/chain/${seg(chain.name)}`, { stream, signal: ctx.signal });
      const remove = button("Delete", () => fill(confirm, banner("warn", `Delete the chain ${chain.name}? Requests naming it will go to the default chain.`,
        h("div", { class: "row" },
          button("Delete it", () => save("DELETE", `/v1/admin/chains/${seg(chain.name)}`, undefined, `Deleted chain ${chain.name}`), { class: "danger" }),
          button("Cancel", () => fill(confirm))))), {
        class: "danger", disabled: !canEdit || isDefault,
        title: isDefault ? "The default chain cannot be deleted: make another chain the default first" : (canEdit ? null : why),
      });
      return h("section", { class: "card chain", dataset: { chain: chain.name }, "aria-label": `Chain ${chain.name}` },
        h("div", { class: "row spread" },
          h("h2", null, chain.name),
          isDefault ? badge("default", "info") : null,
          chain.kind === "embeddings" ? badge("embeddings", "info") : null),
        h("ol", { class: "entries" }, chain.entries.map((e, i) => entryItem(chain, e, i, chain.entries.length === 1))),
        canEdit ? addEntryForm(chain) : null,
        h("div", { class: "row" },
          ctx.access.adminRead && !isDefault && defaultName !== undefined
            ? button("Make default", () => save("PATCH", "/v1/admin/settings", { defaultChain: chain.name },
              `Made ${chain.name} the default chain`), { disabled: !canEdit, title: canEdit ? null : why })
            : null,
          button("Test", testing(false), { disabled: !canEdit, title: canEdit ? "Ask every entry once" : why }),
          // Embeddings do not stream: their chains have the plain test only.
          chain.kind === "embeddings" ? null
            : button("Test streaming", testing(true), { disabled: !canEdit, title: canEdit ? "Ask every entry once, streaming" : why }),
          ctx.access.adminRead ? remove : null),
        confirm,
        results);
    }

    function createForm() {
      if (!canEdit) return null;
      const name = h("input", { id: "new-chain-name", required: true, autocomplete: "off", placeholder: "e.g. fast" });
      const provider = providerSelect("new-chain-provider");
      const model = h("input", { id: "new-chain-model", list: "known-models", required: true, autocomplete: "off" });
      const kind = h("select", { id: "new-chain-kind" }, KINDS.map((k) => h("option", { value: k }, k)));
      const error = h("p", { class: "field-error", role: "alert" });
      return h("details", { class: "card", id: "create-chain" },
        h("summary", null, "New chain"),
        h("form", { novalidate: true, on: { submit: async (event) => {
          event.preventDefault();
          const wanted = name.value.trim();
          if (!wanted || !model.value.trim()) {
            error.textContent = "A chain needs a name and a first entry.";
            return;
          }
          if ((config.chains || []).some((c) => c.name === wanted)) {
            error.textContent = `There is already a chain named ${wanted}.`;
            return;
          }
          error.textContent = "";
          // As `chain429 chain add` writes it: a chat chain without a kind (what none means).
          const body = { name: wanted, ...(kind.value === "chat" ? {} : { kind: kind.value }),
            entries: [{ provider: provider.value, model: model.value.trim() }] };
          await save("PUT", `/v1/admin/chains/${seg(wanted)}`, body,
            `Created ${kind.value === "chat" ? "" : `${kind.value} `}chain ${wanted}`);
        } } },
        h("div", { class: "form-grid" },
          h("div", { class: "field" }, h("label", { for: name.id }, "Name"), name,
            h("span", { class: "hint" }, "What clients send as model")),
          h("div", { class: "field" }, h("label", { for: kind.id }, "Kind"), kind,
            h("span", { class: "hint" }, "chat: /v1/chat/completions; embeddings: /v1/embeddings")),
          h("div", { class: "field" }, h("label", { for: provider.id }, "First entry: provider"), provider),
          h("div", { class: "field" }, h("label", { for: model.id }, "Model"), model),
          h("div", { class: "submit" }, h("button", { type: "submit", class: "primary" }, "Create chain"))),
        error));
    }

    function draw() {
      const defaultName = ctx.access.adminRead ? (config.settings || {}).defaultChain || null : undefined;
      fill(view.querySelector("#known-models"), modelOptions(config, models).map((m) => h("option", { value: m })));
      const open = creator.querySelector("details")?.open;
      fill(creator, createForm());
      if (open && creator.querySelector("details")) creator.querySelector("details").open = true;
      const chains = config.chains || [];
      fill(list, chains.length ? chains.map((c) => chainCard(c, defaultName))
        : h("p", { class: "empty" }, "No chains yet."));
      if (!ctx.access.adminRead) {
        list.prepend(banner("info", "A proxy key sees each chain's entries from the rate-limit report; the default chain and edits need an admin key."));
      }
      if (refocus) {
        const card = [...list.querySelectorAll("section.chain")].find((c) => c.dataset.chain === refocus.chain);
        const item = card && [...card.querySelectorAll("li.entry")].find((li) => li.dataset.label === refocus.label);
        const target = item && item.querySelector(`[data-focus="${refocus.via}"]`);
        if (target && !target.disabled) target.focus();
        else if (item) item.querySelector("button:not(:disabled)")?.focus();
        refocus = null;
      }
    }

    load().catch((err) => {
      if (err.name !== "AbortError") fill(list, banner("error", `Could not read the chains: ${err.message}`));
    });
  },
};

// Providers: list (keys masked), add from a preset, edit, remove, test.
//
// A key is only ever written as a `${VAR}` reference: the form asks for the
// variable's name, never for the key, so the key stays in the server's
// environment or .env and never passes through the browser. Editing keeps
// what the form does not show (headers, prefill, quota scope): the provider is
// sent back as read, with the form's fields on top; a masked key sent back is
// kept by the server. Removing a provider first removes its entries from the
// chains that use them, after saying which. CLI: `chain429 provider
// add|show|set|remove|test`.

import { get, seg } from "../api.js";
import { badge, banner, button, fill, h, num, table } from "../dom.js";
import { edit, readConfig } from "../edits.js";
import { runProbe } from "../probe.js";

const VAR = /^[A-Za-z_][A-Za-z0-9_]*$/;
const REFERENCE = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/;
const LIMITS = [
  ["requestsPerMinute", "Requests per minute"],
  ["requestsPerDay", "Requests per day"],
  ["tokensPerMinute", "Tokens per minute"],
  ["tokensPerDay", "Tokens per day"],
  ["concurrentRequests", "Concurrent requests"],
];
const SHORT = {
  requestsPerMinute: "req/min", requestsPerDay: "req/day", tokensPerMinute: "tok/min",
  tokensPerDay: "tok/day", concurrentRequests: "at once",
};
let presetTypes = null; // from /openapi.json: the types this server knows

async function types(signal) {
  if (!presetTypes) {
    const { data } = await get("/openapi.json", { signal });
    presetTypes = data.components.schemas.ProviderConfig.properties.type.enum;
  }
  return presetTypes;
}

function limitsText(provider) {
  const parts = Object.entries(provider.rateLimits || {})
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${num(v)} ${SHORT[k] || k}`);
  if (provider.timeout) parts.push(`timeout ${num(provider.timeout)} ms`);
  return parts.join(", ") || "–";
}

function users(config, id) {
  return (config.chains || []).map((chain) => ({
    chain,
    positions: chain.entries.map((e, i) => (e.provider === id ? i : -1)).filter((i) => i >= 0),
  })).filter((u) => u.positions.length);
}

function suggestVar(id) {
  const base = (id || "PROVIDER").toUpperCase().replace(/[^A-Z0-9_]/g, "_");
  return /^[A-Z_]/.test(base) ? `${base}_API_KEY` : `P_${base}_API_KEY`;
}

export default {
  id: "providers",
  title: "Providers",
  needs: "read",
  render(view, ctx) {
    const canEdit = ctx.access.write;
    const why = ctx.whyReadOnly;
    const notice = h("div", { id: "providers-notice" });
    const body = h("div", null, h("p", { class: "loading" }, "Loading…"));
    const formSlot = h("div", { id: "provider-form" });
    const testSlot = h("div", { id: "provider-test" });
    const state = { etag: null, path: null };
    let config = {};
    let known = [];

    fill(view, h("div", { class: "row spread" }, h("h1", null, "Providers"),
      button("Add provider", () => showForm(null), { class: "primary", disabled: !canEdit, title: canEdit ? null : why, id: "add-provider" })),
    notice, formSlot, body, testSlot);

    async function load() {
      const [read, list] = await Promise.all([readConfig(ctx.signal), types(ctx.signal)]);
      if (!ctx.alive()) return;
      config = read.config;
      state.etag = read.etag;
      state.path = read.path;
      known = list;
      draw();
    }

    async function save(method, path, json, doing) {
      const ok = await edit(state, notice, method, path, json, doing);
      await load();
      return ok;
    }

    function draw() {
      const providers = config.providers || [];
      if (!providers.length) {
        fill(body, h("p", { class: "empty" }, "No providers yet."));
        return;
      }
      fill(body, table(["ID", "Name", "Type", "Base URL", "Key", "Limits", "Used by", ""],
        providers.map((p) => {
          const usedBy = users(config, p.id);
          return h("tr", { dataset: { provider: p.id } },
            h("td", { class: "mono break" }, p.id),
            h("td", { class: "break" }, p.name || "–", p.paid ? [" ", badge("paid", "warn")] : null),
            h("td", null, p.type),
            h("td", { class: "break small" }, p.baseUrl || h("span", { class: "muted" }, "preset default")),
            h("td", { class: "mono break" }, p.apiKey || h("span", { class: "muted" }, "none")),
            h("td", { class: "small" }, limitsText(p)),
            h("td", { class: "small break" }, usedBy.map((u) => u.chain.name).join(", ") || "–"),
            h("td", { class: "actions" },
              button("Edit", () => showForm(p), { disabled: !canEdit, title: canEdit ? null : why, "aria-label": `Edit ${p.id}` }),
              button("Test", () => test(p), { disabled: !canEdit, title: canEdit ? null : why, "aria-label": `Test ${p.id}` }),
              button("Remove", () => confirmRemove(p), { class: "danger", disabled: !canEdit, title: canEdit ? null : why, "aria-label": `Remove ${p.id}` })));
        }), { caption: "Keys are masked: a ${VAR} reference is shown as written, a literal key as its last characters", stacked: true }));
    }

    function test(provider) {
      const target = h("div");
      fill(testSlot, h("div", { class: "card" }, h("h2", { class: "nomargin" }, `Test of ${provider.id}`),
        h("p", { class: "small muted" }, "One tiny request to each model this provider serves in a chain, whatever its cooldown says."),
        target));
      runProbe(target, `/v1/test/provider/${seg(provider.id)}`, { signal: ctx.signal });
    }

    function confirmRemove(provider) {
      const usedBy = users(config, provider.id);
      const defaultChain = (config.settings || {}).defaultChain;
      const emptied = usedBy.filter((u) => u.positions.length === u.chain.entries.length);
      const blocked = emptied.find((u) => u.chain.name === defaultChain);
      const lines = usedBy.map((u) => h("li", null, u.positions.length === u.chain.entries.length
        ? `chain ${u.chain.name}: all its entries, so the chain is deleted`
        : `chain ${u.chain.name}: ${u.positions.map((i) => `${entryText(u.chain.entries[i])} (position ${i + 1})`).join(", ")}`));
      fill(formSlot, h("div", { class: "card", id: "remove-provider" },
        h("h2", { class: "nomargin" }, `Remove ${provider.id}?`),
        usedBy.length ? [h("p", null, "This also removes, from the chains that use it:"), h("ul", null, lines)]
          : h("p", null, "No chain uses it."),
        blocked ? banner("warn", `It serves every entry of the default chain ${blocked.chain.name}: make another chain the default first.`) : null,
        h("div", { class: "row" },
          button(usedBy.length ? "Remove it and its entries" : "Remove it", () => remove(provider, usedBy),
            { class: "danger", disabled: Boolean(blocked) }),
          button("Cancel", () => fill(formSlot)))));
    }

    async function remove(provider, usedBy) {
      fill(formSlot);
      for (const { chain } of usedBy) {
        const left = chain.entries.filter((e) => e.provider !== provider.id);
        const ok = left.length
          ? await edit(state, notice, "PUT", `/v1/admin/chains/${seg(chain.name)}`, { ...chain, entries: left }, `Removed ${provider.id}'s entries from ${chain.name}`)
          : await edit(state, notice, "DELETE", `/v1/admin/chains/${seg(chain.name)}`, undefined, `Deleted chain ${chain.name}`);
        if (!ok) {
          await load();
          return;
        }
      }
      await save("DELETE", `/v1/admin/providers/${seg(provider.id)}`, undefined, `Removed provider ${provider.id}`);
    }

    function field(id, label, input, hint) {
      input.id = id;
      return h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("span", { class: "hint" }, hint) : null);
    }

    function showForm(existing) {
      const editing = Boolean(existing);
      const current = existing || {};
      const type = h("select", null, known.map((t) => h("option", { value: t }, t)));
      type.value = current.type || (known.includes("groq") ? "groq" : known[0]);
      const id = h("input", { value: current.id || "", autocomplete: "off", required: true, readonly: editing });
      const name = h("input", { value: current.name || "", autocomplete: "off" });
      const baseUrl = h("input", { value: current.baseUrl || "", autocomplete: "off", inputmode: "url", placeholder: "the preset's default" });
      const reference = REFERENCE.exec(current.apiKey || "");
      const keyVar = h("input", { value: reference ? reference[1] : "", autocomplete: "off", spellcheck: "false", placeholder: suggestVar(current.id || "groq") });
      const timeout = h("input", { type: "number", min: "1", value: current.timeout ?? "" });
      const paid = h("input", { type: "checkbox", checked: Boolean(current.paid) });
      const limits = LIMITS.map(([key, label]) => [key, label, h("input", { type: "number", min: "1", value: (current.rateLimits || {})[key] ?? "" })]);
      const error = h("p", { class: "field-error", role: "alert" });
      const keyHint = editing && current.apiKey && !reference
        ? `The file holds a literal key (${current.apiKey}). Leave this empty to keep it; a new type or base URL needs the key again, as a variable.`
        : "The name of the environment variable (or .env entry) holding the key where the server runs; the file gets ${VAR}, never the key.";
      if (!editing) {
        const follow = () => {
          if (!id.dataset.touched) id.value = type.value;
          keyVar.placeholder = suggestVar(id.value);
        };
        id.addEventListener("input", () => {
          id.dataset.touched = "1";
          keyVar.placeholder = suggestVar(id.value);
        });
        type.addEventListener("change", follow);
        follow();
      }
      const form = h("form", { class: "card stack", novalidate: true, on: { submit: async (event) => {
        event.preventDefault();
        const providerId = id.value.trim();
        let variable = keyVar.value.trim().replace(/^\$\{(.*)\}$/, "$1");
        if (!providerId) {
          error.textContent = "A provider needs an id.";
          return;
        }
        if (!editing && (config.providers || []).some((p) => p.id === providerId)) {
          error.textContent = `There is already a provider ${providerId}: edit it instead.`;
          return;
        }
        if (!variable && !editing) variable = keyVar.placeholder;
        if (variable && !VAR.test(variable)) {
          error.textContent = "The key variable must be a name like GROQ_API_KEY: letters, digits and _.";
          return;
        }
        const rateLimits = {};
        for (const [key, , input] of limits) if (input.value) rateLimits[key] = Number(input.value);
        // In the order a person writes them; an edit keeps the fields the form does not show.
        const body = {
          id: providerId,
          name: name.value.trim() || null,
          type: type.value,
          baseUrl: baseUrl.value.trim() || null,
          apiKey: variable ? `\${${variable}}` : current.apiKey,
          timeout: timeout.value ? Number(timeout.value) : null,
          paid: paid.checked || null,
          rateLimits: Object.keys(rateLimits).length ? rateLimits : null,
        };
        for (const [key, value] of Object.entries(current)) if (!(key in body)) body[key] = value;
        if (body.apiKey === undefined) delete body.apiKey;
        error.textContent = "";
        const ok = await save("PUT", `/v1/admin/providers/${seg(providerId)}`, body,
          editing ? `Edited provider ${providerId}` : `Added provider ${providerId}`);
        if (ok) fill(formSlot);
      } } },
      h("h2", { class: "nomargin" }, editing ? `Edit ${current.id}` : "Add a provider"),
      h("div", { class: "form-grid" },
        field("provider-type", "Type (preset)", type, "Sets the default URL and how its rate limits are read"),
        field("provider-id", "ID", id, editing ? "The id cannot change" : "What chain entries name"),
        field("provider-name", "Display name", name),
        field("provider-base-url", "Base URL", baseUrl, "Required for generic-openai"),
        field("provider-key-var", "Key variable", keyVar, keyHint),
        field("provider-timeout", "Timeout (ms)", timeout, "Empty: settings.requestTimeoutMs"),
        h("label", { class: "check" }, paid, "Paid: a last resort")),
      h("fieldset", null, h("legend", null, "Configured rate limits (for providers that send no headers)"),
        h("div", { class: "form-grid" }, limits.map(([key, label, input]) => field(`limit-${key}`, label, input)))),
      error,
      h("div", { class: "row" },
        h("button", { type: "submit", class: "primary" }, editing ? "Save" : "Add provider"),
        button("Cancel", () => fill(formSlot))));
      fill(formSlot, form);
      (editing ? type : id).focus();
    }

    load().catch((err) => {
      if (err.name !== "AbortError") fill(body, banner("error", `Could not read the providers: ${err.message}`));
    });
  },
};

function entryText(entry) {
  return `${entry.provider}/${entry.model}`;
}

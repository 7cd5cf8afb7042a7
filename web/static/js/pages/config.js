// Config: the file as the server reads it (secrets masked), the file against the
// running config, reload, and a scratch pad to validate or diff any YAML.
//
// Routes: GET /v1/admin/config and /v1/admin/status, GET /v1/admin/diff (the
// file against what runs: what a reload would change), POST /v1/admin/reload,
// POST /v1/admin/validate and /v1/admin/diff with a YAML body. CLI: `chain429
// config show`, `chain429 diff`, `chain429 reload`, `chain429 validate FILE`.

import { api, get } from "../api.js";
import { badge, banner, button, facts, fill, h, when } from "../dom.js";
import { readConfig } from "../edits.js";
import { toYaml } from "../yaml.js";

function issueList(errors) {
  return h("ul", null, (errors || []).map((e) =>
    h("li", null, `${e.line ? `line ${e.line}: ` : ""}${e.path ? `${e.path}: ` : ""}${e.message}`)));
}

/** A unified diff, one line a span, coloured by its first character. */
function unified(text) {
  return h("pre", { class: "diff" }, text.split("\n").map((line) => h("span", {
    class: line.startsWith("+") && !line.startsWith("+++") ? "add"
      : line.startsWith("-") && !line.startsWith("---") ? "del" : line.startsWith("@@") ? "hunk" : null,
  }, `${line}\n`)));
}

function diffView(data, sameText) {
  if (data.same) return banner("ok", sameText);
  return h("div", { class: "stack" },
    h("ul", { class: "summary" }, data.summary.map((line) => h("li", { class: "mono" }, line))),
    data.unified ? unified(data.unified) : null);
}

export default {
  id: "config",
  title: "Config",
  needs: "read",
  render(view, ctx) {
    const statusSlot = h("div", null, h("p", { class: "loading" }, "Loading…"));
    const fileSlot = h("div");
    const diffSlot = h("div", { id: "file-diff" });
    const reloadSlot = h("div", { id: "reload-result" });
    const padResult = h("div", { id: "pad-result" });
    const pad = h("textarea", { id: "yaml-pad", spellcheck: "false", rows: "16", "aria-describedby": "pad-help" });

    async function showStatus() {
      const [{ data: status }, read] = await Promise.all([get("/v1/admin/status", { signal: ctx.signal }), readConfig(ctx.signal)]);
      if (!ctx.alive()) return;
      const text = toYaml(read.config);
      fill(statusSlot, h("div", { class: "card" },
        status.last_error ? banner("error", `The file on disk is rejected (${when(status.last_error_at * 1000)}); the server keeps generation ${status.generation}:`,
          issueList(status.last_error)) : null,
        facts([
          ["File", status.config_path || "none: this server was started from a config in memory"],
          ["Generation", String(status.generation)],
          ["Loaded", when(status.loaded_at * 1000)],
          ["Last reload", status.last_reload_at ? when(status.last_reload_at * 1000) : "not since start"],
        ])));
      fill(fileSlot, h("pre", { id: "config-yaml", tabindex: "0", "aria-label": "The config file, secrets masked" }, text));
      if (!pad.value) pad.value = text;
      return status;
    }

    async function showDiff() {
      try {
        const { data } = await get("/v1/admin/diff", { signal: ctx.signal, ok: [422] });
        fill(diffSlot, data.valid === false
          ? banner("error", "The file on disk is invalid, so a reload would keep the running config:", issueList(data.errors))
          : diffView(data, "The file and the running config are the same."));
      } catch (err) {
        if (err.name === "AbortError") throw err;
        fill(diffSlot, banner(err.code === "no_config_file" ? "info" : "error",
          err.code === "no_config_file" ? "This server has no config file to compare." : err.message));
      }
    }

    async function reload() {
      try {
        const { status, data } = await api("POST", "/v1/admin/reload", { ok: [422] });
        fill(reloadSlot, status === 200
          ? banner("ok", data.reloaded ? `Reloaded: generation ${data.generation} in force.` : `Unchanged: generation ${data.generation} stays in force.`)
          : banner("error", `Not reloaded: the file is invalid; generation ${data.generation} stays in force.`, issueList(data.errors)));
      } catch (err) {
        fill(reloadSlot, banner("error", `Reload failed: ${err.message}`));
      }
      await Promise.all([showStatus(), showDiff()]);
    }

    async function check(kind) {
      const path = kind === "validate" ? "/v1/admin/validate" : "/v1/admin/diff";
      fill(padResult, h("p", { class: "loading" }, kind === "validate" ? "Validating…" : "Comparing…"));
      try {
        const { data } = await api("POST", path, { yaml: pad.value, ok: [422] });
        if (data.valid === false) {
          fill(padResult, banner("error", "Invalid:", issueList(data.errors)));
        } else if (kind === "validate") {
          fill(padResult, banner("ok", "Valid: the server would run this config."));
        } else {
          fill(padResult, diffView(data, "Nothing would change: this is the running config."));
        }
      } catch (err) {
        fill(padResult, banner("error", err.message));
      }
    }

    fill(view,
      h("h1", null, "Config"),
      statusSlot,
      h("div", { class: "row spread" }, h("h2", null, "The file against the running config"),
        button("Reload now", reload, { id: "reload", title: "Read the file again (chain429 reload)" })),
      h("p", { class: "small muted" }, "What a reload would change. The server also reloads by itself when the file changes."),
      reloadSlot,
      diffSlot,
      h("h2", null, "The file, secrets masked"),
      h("p", { class: "small muted" }, "As the server reads it (comments are kept in the file, not shown here). A ${VAR} reference is shown as written, a literal key as its last characters."),
      fileSlot,
      h("h2", null, "Check some YAML"),
      h("p", { class: "small muted", id: "pad-help" }, "Paste or edit a whole config file: the server validates it, or says what would change from the running config. Nothing is saved. Masked keys count as the text they show."),
      pad,
      h("div", { class: "row" },
        button("Validate", () => check("validate"), { class: "primary", id: "validate" }),
        button("Diff against running", () => check("diff"), { id: "diff" }),
        badge("nothing is saved", "neutral")),
      padResult);

    Promise.all([showStatus(), showDiff()]).catch((err) => {
      if (err.name !== "AbortError") fill(statusSlot, banner("error", `Could not read the config: ${err.message}`));
    });
  },
};

// Safe edits: every write names the config generation it was based on.
//
// The admin API answers every read and write with the generation as an ETag;
// a write sends it back as If-Match. When the file changed underneath (a CLI
// command, another browser, a text editor the server noticed), the server
// answers 412 and writes nothing: the page then says so and shows the new
// state, never overwriting a change it had not seen. After a write the page
// says what the server now runs.

import { api, get } from "./api.js";
import { banner, fill, h } from "./dom.js";

/** The config as the server reads it, masked, with the generation to send back. */
export async function readConfig(signal) {
  const { data, etag } = await get("/v1/admin/config", { signal });
  return { config: data.config || {}, path: data.path, generation: data.generation, etag };
}

function issues(err) {
  const list = err.body && Array.isArray(err.body.errors) ? err.body.errors : [];
  if (!list.length) return null;
  return h("ul", null, list.map((e) =>
    h("li", null, `${e.line ? `line ${e.line}: ` : ""}${e.path ? `${e.path}: ` : ""}${e.message}`)));
}

/**
 * Make one edit. `state` holds the ETag read with the data on screen; `notice`
 * is where the outcome shows. Resolves true when the server took it.
 */
export async function edit(state, notice, method, path, body, doing) {
  if (state.busy) return false; // one edit at a time: a double click is not two edits
  state.busy = true;
  fill(notice, h("p", { class: "loading", role: "status" }, `${doing}: saving…`));
  try {
    const answer = await api(method, path, { json: body, ifMatch: state.etag });
    state.etag = answer.etag;
    fill(notice, banner("ok",
      `${doing}: saved to ${state.path || "the config"}, and the server took it: generation ${answer.data.generation} in force.`));
    return true;
  } catch (err) {
    if (err.name === "AbortError") throw err;
    if (err.status === 412) {
      fill(notice, h("div", { class: "conflict" }, banner("warn", h("strong", null, "Not saved: the config changed underneath. "),
        `${doing} was based on generation ${(state.etag || "?").replace(/"/g, "")}, but the server is at ` +
        `generation ${(err.headers && err.headers.get("etag") || "?").replace(/"/g, "")}: someone changed the ` +
        "file (a CLI command, another browser, or an editor). Below is the new state; make your change " +
        "again if it still applies.")));
    } else {
      fill(notice, banner("error", `${doing} failed: ${err.message}`, issues(err)));
    }
    return false;
  } finally {
    state.busy = false;
  }
}

// Playground: a chat through a chain, streamed, with the headers that say who answered.
//
// `POST /v1/chat/completions` exactly as an SDK sends it (`stream: true` by
// default); the answer's `X-429chain-*` headers show the chain, why it was
// chosen, the entry that answered and the trace of every entry considered.
// The `model` list is `/v1/models`: chat chains, then chat entry models (an
// entry model fails over across every entry serving it); embeddings are not chat.

import { api, errorMessage, get, postForEvents, readEvents } from "../api.js";
import { badge, banner, button, facts, fill, h, ms } from "../dom.js";

const HEADERS = [
  ["x-429chain-chain", "Chain"],
  ["x-429chain-route", "Chosen by"],
  ["x-429chain-provider", "Answered by"],
  ["x-429chain-attempts", "Upstream calls"],
];
let conversation = []; // kept while the tab is open: leaving the page does not lose it

function traceList(trace) {
  if (!trace) return "–";
  return h("ul", { class: "trace" }, trace.split(",").map((token) => {
    const [entry, outcome = ""] = token.split(/=(?=[^=]*$)/);
    const kind = outcome === "200" ? "ok" : outcome.startsWith("skip:") ? "neutral" : outcome === "429" ? "cool" : "bad";
    return h("li", null, badge(`${entry} = ${outcome}`, kind));
  }));
}

export default {
  id: "playground",
  title: "Playground",
  needs: "proxy",
  render(view, ctx) {
    const model = h("select", { id: "pg-model" });
    const stream = h("input", { type: "checkbox", id: "pg-stream", checked: true });
    const maxTokens = h("input", { type: "number", id: "pg-max-tokens", min: "1", max: "1000000", placeholder: "provider default" });
    const prompt = h("textarea", { id: "pg-prompt", rows: "3", placeholder: "Say hello (Ctrl+Enter sends)" });
    const chat = h("div", { class: "chat", id: "pg-chat", "aria-live": "polite" });
    const about = h("div", { id: "pg-headers" });
    const send = h("button", { type: "submit", class: "primary", id: "pg-send" }, "Send");
    const stop = button("Stop", () => running && running.abort(), { id: "pg-stop", disabled: true });
    let running = null;

    function bubble(role, text) {
      return h("div", { class: ["msg", role] }, h("span", { class: "who-said" }, role), h("span", { class: "text" }, text));
    }

    function drawChat() {
      fill(chat, conversation.map((m) => bubble(m.role, m.content)));
    }

    function showHeaders(headers, started, firstAt) {
      const id = headers.get("x-request-id");
      fill(about, h("div", { class: "card" }, facts([
        ...HEADERS.map(([name, label]) => [label, headers.get(name) || "–"]),
        ["Trace", traceList(headers.get("x-429chain-trace"))],
        ["Request id", id ? (ctx.access.adminRead ? h("a", { href: `#/requests/${encodeURIComponent(id)}` }, id) : id) : "–"],
        ["Time", firstAt ? `first token after ${ms(firstAt - started)}, done after ${ms(performance.now() - started)}` : `${ms(performance.now() - started)}`],
      ])));
    }

    async function ask() {
      const text = prompt.value.trim();
      if (!text || running) return;
      conversation.push({ role: "user", content: text });
      prompt.value = "";
      drawChat();
      const body = { model: model.value, messages: conversation.map(({ role, content }) => ({ role, content })), stream: stream.checked };
      if (maxTokens.value) body.max_tokens = Number(maxTokens.value);
      const reply = bubble("assistant", "");
      const out = reply.querySelector(".text");
      chat.appendChild(reply);
      running = new AbortController();
      ctx.signal.addEventListener("abort", () => running && running.abort(), { once: true });
      send.disabled = true;
      stop.disabled = false;
      const started = performance.now();
      let firstAt = null;
      try {
        if (body.stream) {
          const response = await postForEvents("/v1/chat/completions", { json: body, signal: running.signal });
          showHeaders(response.headers, started, null);
          await readEvents(response, (event) => {
            if (event && typeof event === "object" && event.error) {
              throw new Error(errorMessage(500, event));
            }
            const delta = event && event.choices && event.choices[0] && event.choices[0].delta;
            if (delta && typeof delta.content === "string" && delta.content) {
              if (firstAt === null) firstAt = performance.now();
              out.append(document.createTextNode(delta.content));
            }
          });
          showHeaders(response.headers, started, firstAt);
        } else {
          const { data, headers } = await api("POST", "/v1/chat/completions", { json: body, signal: running.signal });
          const content = data && data.choices && data.choices[0] && data.choices[0].message ? data.choices[0].message.content : "";
          out.textContent = content || "";
          showHeaders(headers, started, null);
        }
        conversation.push({ role: "assistant", content: out.textContent });
      } catch (err) {
        if (err.name === "AbortError") {
          out.append(document.createTextNode(" [stopped]"));
          conversation.push({ role: "assistant", content: out.textContent });
        } else {
          reply.classList.add("error");
          out.textContent = err.message;
          conversation.pop(); // the question was not answered: let it be asked again
          prompt.value = text;
          if (err.headers) showHeaders(err.headers, started, null);
        }
      } finally {
        running = null;
        send.disabled = false;
        stop.disabled = true;
      }
    }

    const form = h("form", { class: "card stack", novalidate: true, on: { submit: (event) => {
      event.preventDefault();
      ask();
    } } },
    h("div", { class: "form-grid" },
      h("div", { class: "field" }, h("label", { for: "pg-model" }, "Chain or model"), model),
      h("div", { class: "field" }, h("label", { for: "pg-max-tokens" }, "max_tokens"), maxTokens),
      h("label", { class: "check" }, stream, "Stream the answer")),
    h("div", { class: "field" }, h("label", { for: "pg-prompt" }, "Message"), prompt),
    h("div", { class: "row" }, send, stop,
      button("New chat", () => {
        conversation = [];
        drawChat();
        fill(about);
      }, { id: "pg-new" })));
    prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        ask();
      }
    });

    fill(view, h("h1", null, "Playground"),
      h("p", { class: "small muted" }, "Requests go through the proxy like any client's: they use quota, and show in the request log."),
      h("div", { class: "two" }, h("div", { class: "stack" }, form, chat), about));
    drawChat();

    get("/v1/models", { signal: ctx.signal }).then(({ data }) => {
      // A chat only: embeddings chains and models serve /v1/embeddings (an older server says no kind).
      const chat = data.data.filter((m) => !m.chain_kind || m.chain_kind === "chat");
      const chains = chat.filter((m) => m.kind !== "model");
      const models = chat.filter((m) => m.kind === "model");
      fill(model,
        chains.length ? h("optgroup", { label: "Chains" }, chains.map((m) => h("option", { value: m.id }, m.id))) : null,
        models.length ? h("optgroup", { label: "Entry models (every entry serving it)" },
          models.map((m) => h("option", { value: m.id }, `${m.id} (${(m.providers || []).join(", ")})`))) : null);
      const wanted = ctx.route.params.get("model");
      if (wanted) model.value = wanted;
    }).catch((err) => {
      if (err.name !== "AbortError") fill(about, banner("error", `Could not list the chains: ${err.message}`));
    });
  },
};

// The shell: who is signed in, which page is open, and the page's lifecycle.
//
// Pages are modules under pages/; the address (`#/limits`, `#/requests/<id>`,
// `#/requests?chain=fast`) says which one and with what. Each page gets a
// context with an AbortSignal and timers that stop when the user leaves it.
//
// Access is asked, not guessed: `GET /v1/admin/status` without a key answers
// 200 on a keyless loopback server (the UI opens at once), 401 when a key is
// needed (the sign-in form), and with a key it says what that key may do
// (`access.write`). A 403 there means a proxy key on a server with admin keys:
// the UI then offers what the proxy routes allow, read-only.

import { api, session, whenUnauthorized } from "./api.js";
import { banner, button, fill, h, timeZone } from "./dom.js";
import chains from "./pages/chains.js";
import clients from "./pages/clients.js";
import config from "./pages/config.js";
import limits from "./pages/limits.js";
import overview from "./pages/overview.js";
import playground from "./pages/playground.js";
import providers from "./pages/providers.js";
import requests from "./pages/requests.js";

const PAGES = [overview, limits, chains, providers, clients, requests, config, playground];
const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const bannerSlot = document.getElementById("banner");
const toasts = document.getElementById("toasts");
const foot = document.getElementById("foot");

let access = null; // {mode: open|admin|read|proxy, adminRead, write, label}
let current = null; // {page, stop()}

// -- access ------------------------------------------------------------------

async function probeAccess() {
  try {
    const { data } = await api("GET", "/v1/admin/status", { quiet401: true });
    const about = (data && data.access) || { label: session.key() ? "key" : "open", write: true };
    const mode = about.label === "open" ? "open" : about.write ? "admin" : "read";
    return { mode, adminRead: true, write: Boolean(about.write), label: about.label };
  } catch (err) {
    if (err.status === 401) return null;
    if (err.status === 403) return { mode: "proxy", adminRead: false, write: false, label: "proxy key" };
    throw err;
  }
}

const READ_ONLY_WHY = {
  read: "Read-only: this is a proxy key. This server has no settings.adminKeys, so proxy keys " +
    "may read the admin API but not change anything. Sign in with an admin key to edit.",
  proxy: "Read-only: this is a proxy key. You see what the proxy routes allow (live limits, " +
    "models, the playground); the other pages need an admin key.",
};

/** Why edits are off for this session, or null when they are on. */
export function whyReadOnly() {
  return access && !access.write ? READ_ONLY_WHY[access.mode] || READ_ONLY_WHY.read : null;
}

function showWho() {
  const labels = {
    open: "open: loopback, no keys",
    admin: `admin (${access.label})`,
    read: `read-only (${access.label})`,
    proxy: "proxy key: read-only",
  };
  fill(who,
    h("span", { class: ["badge", access.write ? "ok" : "warn"], id: "access" }, labels[access.mode]),
    session.key() ? button("Sign out", signOut, { class: "quiet" }) : null);
  const why = whyReadOnly();
  fill(bannerSlot, why ? banner("info", why) : null);
}

function signOut() {
  session.forget();
  access = null;
  showSignIn();
}

function showSignIn(message) {
  stopPage();
  fill(nav);
  fill(who);
  fill(bannerSlot);
  const input = h("input", {
    type: "password", id: "key", autocomplete: "off", spellcheck: "false",
    "aria-describedby": "key-help", required: true,
  });
  const error = h("p", { class: "field-error", id: "signin-error", role: "alert" }, message || "");
  const form = h("form", { class: "signin card", novalidate: true, on: { submit: (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) {
      error.textContent = "Enter a key.";
      return;
    }
    session.remember(key);
    input.value = "";
    start("That key was not accepted.");
  } } },
  h("h1", null, "Sign in"),
  h("p", { id: "key-help" }, "This server needs a key. An admin key (settings.adminKeys) can change " +
    "things; a proxy key (settings.apiKeys) sees a read-only view. The key is kept in this tab's " +
    "session storage only, and sent to this server alone."),
  h("label", { for: "key" }, "API key"),
  input,
  error,
  h("button", { type: "submit", class: "primary" }, "Sign in"));
  fill(main, form);
  document.title = "Sign in · chain429";
  input.focus();
}

whenUnauthorized(() => {
  session.forget();
  access = null;
  showSignIn("The server no longer accepts this key; sign in again.");
});

// -- pages ---------------------------------------------------------------------

function parseHash() {
  const raw = location.hash.startsWith("#/") ? location.hash.slice(2) : "";
  const [path, search = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part;
    }
  });
  return { id: parts[0] || "", rest: parts.slice(1), params: new URLSearchParams(search) };
}

function allowed(page) {
  return page.needs === "proxy" || access.adminRead;
}

function landing() {
  return access.adminRead ? "overview" : "limits";
}

function showNav(activeId) {
  fill(nav, h("ul", null, PAGES.map((page) => h("li", null,
    h("a", {
      href: `#/${page.id}`,
      "aria-current": page.id === activeId ? "page" : null,
      class: allowed(page) ? null : "locked",
      title: allowed(page) ? null : "Needs an admin key",
    }, page.title)))));
}

function stopPage() {
  if (current) current.stop();
  current = null;
}

/** Timers and fetches of the open page, all stopped when it closes. */
function pageContext(route) {
  const controller = new AbortController();
  const timers = new Set();
  let stopped = false;
  const ctx = {
    route,
    access,
    signal: controller.signal,
    alive: () => !stopped,
    whyReadOnly: whyReadOnly(),
    /** Run fn now and again `interval` ms after each run ends (slower in a hidden tab). */
    poll(fn, interval) {
      const run = async () => {
        if (stopped) return;
        try {
          await fn();
        } catch (err) {
          if (err && err.name !== "AbortError") console.warn("refresh failed:", err.message);
        }
        if (stopped) return;
        const timer = setTimeout(() => {
          timers.delete(timer);
          run();
        }, document.hidden ? interval * 5 : interval);
        timers.add(timer);
      };
      run();
    },
    every(fn, interval) {
      const timer = setInterval(fn, interval);
      timers.add(timer);
    },
    /** Change the address's query without leaving the page (it re-renders). */
    go(hash) {
      if (location.hash === hash) render();
      else location.hash = hash;
    },
    toast,
  };
  const stop = () => {
    stopped = true;
    controller.abort();
    for (const timer of timers) {
      clearTimeout(timer);
      clearInterval(timer);
    }
  };
  return { ctx, stop };
}

function render() {
  if (!access) return;
  const route = parseHash();
  const page = PAGES.find((p) => p.id === route.id);
  if (!page) {
    location.replace(`#/${landing()}`);
    return;
  }
  stopPage();
  showNav(page.id);
  document.title = `${page.title} · chain429`;
  if (!allowed(page)) {
    fill(main, h("h1", null, page.title), banner("info",
      "This page needs an admin key: it reads the admin and stats API, which this server keeps " +
      "for admin keys. Sign out and sign in with one, or use the pages this key may see."));
    return;
  }
  const { ctx, stop } = pageContext(route);
  const view = h("div", { class: "page", id: `page-${page.id}` });
  fill(main, view);
  current = { page, stop };
  try {
    page.render(view, ctx);
  } catch (err) {
    fill(view, banner("error", `This page failed: ${err.message}`));
  }
}

export function toast(text, kind = "ok") {
  const item = h("div", { class: ["toast", kind] }, text);
  toasts.appendChild(item);
  setTimeout(() => item.remove(), kind === "error" ? 10000 : 5000);
}

async function showFooter() {
  try {
    const { data } = await api("GET", "/health");
    fill(foot, `chain429 ${data.version} · times in ${timeZone}`);
  } catch {
    fill(foot, `times in ${timeZone}`);
  }
}

async function start(rejected) {
  fill(main, h("p", { class: "loading" }, "Connecting…"));
  try {
    access = await probeAccess();
  } catch (err) {
    fill(main, banner("error", `Cannot reach the server: ${err.message}`),
      button("Try again", () => start(), { class: "primary" }));
    return;
  }
  if (!access) {
    const tried = session.key();
    session.forget();
    showSignIn(tried ? rejected || "That key was not accepted." : "");
    return;
  }
  showWho();
  showFooter();
  render();
}

window.addEventListener("hashchange", () => {
  if (location.hash.startsWith("#/")) render();
});
document.getElementById("skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
start();

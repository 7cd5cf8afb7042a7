// Talking to the server: the documented API only, same origin, the key in sessionStorage.
//
// The key is read from sessionStorage for each call and sent as
// `Authorization: Bearer`; it is never put in a URL, a cookie, localStorage or
// a log line. Bodies always say what they are (`application/json`, or
// `application/yaml` for validate and diff): the server refuses anything else
// (docs/security.md). Errors come back in OpenAI's shape and become an
// `ApiError` carrying the server's own message.

const KEY_SLOT = "chain429.key";

export const session = {
  key() {
    try {
      return sessionStorage.getItem(KEY_SLOT) || null;
    } catch {
      return null;
    }
  },
  remember(key) {
    sessionStorage.setItem(KEY_SLOT, key);
  },
  forget() {
    try {
      sessionStorage.removeItem(KEY_SLOT);
    } catch {
      // storage disabled: nothing was kept
    }
  },
};

export class ApiError extends Error {
  constructor(status, message, { code = null, param = null, body = null, headers = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.param = param;
    this.body = body;
    this.headers = headers;
  }
}

/** The server's message from an error body: OpenAI's shape, 429chain's, or the status. */
export function errorMessage(status, body) {
  const error = body && typeof body === "object" ? body.error : null;
  if (error && typeof error === "object" && typeof error.message === "string") return error.message;
  if (typeof error === "string") return error;
  if (status === 0) return "The server did not answer (is it running?).";
  return `The server answered HTTP ${status}.`;
}

function headersFor({ json, yaml, ifMatch, accept, headers }) {
  const out = new Headers(headers || {});
  const key = session.key();
  if (key) out.set("Authorization", `Bearer ${key}`);
  if (json !== undefined) out.set("Content-Type", "application/json");
  if (yaml !== undefined) out.set("Content-Type", "application/yaml");
  if (ifMatch) out.set("If-Match", ifMatch);
  if (accept) out.set("Accept", accept);
  return out;
}

/** Called when the server says the key is missing or wrong (401): the app asks again. */
let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

/**
 * One call. Resolves to {status, data, headers, etag} when the status is 2xx
 * or listed in `ok`; otherwise rejects with an ApiError.
 */
export async function api(method, path, options = {}) {
  const { json, yaml, signal, ok = [], quiet401 = false } = options;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headersFor(options),
      body: json !== undefined ? JSON.stringify(json) : yaml,
      signal,
      credentials: "omit",
      cache: "no-store",
      redirect: "error",
    });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, errorMessage(0, null));
  }
  const type = response.headers.get("content-type") || "";
  let data = null;
  if (type.includes("json")) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  } else {
    data = await response.text();
  }
  const result = { status: response.status, data, headers: response.headers, etag: response.headers.get("etag") };
  if (response.ok || ok.includes(response.status)) return result;
  const error = data && typeof data === "object" ? data.error : null;
  const failure = new ApiError(response.status, errorMessage(response.status, data), {
    code: error && typeof error === "object" ? error.code : null,
    param: error && typeof error === "object" ? error.param : null,
    body: data,
    headers: response.headers,
  });
  if (response.status === 401 && !quiet401) onUnauthorized(failure);
  throw failure;
}

export const get = (path, options) => api("GET", path, options);

/** A query string from the set values of `params`. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** A path segment from a name the user typed or the server sent. */
export const seg = (value) => encodeURIComponent(String(value));

/**
 * Read a server-sent event stream from a fetch answer, calling onEvent(data)
 * for each `data:` event (JSON-decoded when it parses; `[DONE]` as the string).
 */
export async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  const flush = (block) => {
    const lines = block.split(/\r\n|\r|\n/);
    const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, ""));
    if (!data.length) return;
    const text = data.join("\n");
    let value = text;
    try {
      value = JSON.parse(text);
    } catch {
      // not JSON ([DONE]): passed on as text
    }
    onEvent(value);
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.search(/\r\n\r\n|\n\n|\r\r/)) >= 0) {
      const match = buffer.slice(cut).match(/^(\r\n\r\n|\n\n|\r\r)/);
      flush(buffer.slice(0, cut));
      buffer = buffer.slice(cut + match[0].length);
    }
  }
  buffer += decoder.decode();
  if (buffer.trim()) flush(buffer);
}

/** A POST whose answer is an event stream; resolves to the fetch Response (headers read). */
export async function postForEvents(path, { json, signal, accept = "text/event-stream" } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: headersFor({ json, accept }),
      body: json !== undefined ? JSON.stringify(json) : undefined,
      signal,
      credentials: "omit",
      cache: "no-store",
      redirect: "error",
    });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, errorMessage(0, null));
  }
  if (!response.ok) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    const error = body && typeof body === "object" ? body.error : null;
    const failure = new ApiError(response.status, errorMessage(response.status, body), {
      code: error && typeof error === "object" ? error.code : null,
      body,
      headers: response.headers,
    });
    if (response.status === 401) onUnauthorized(failure);
    throw failure;
  }
  return response;
}

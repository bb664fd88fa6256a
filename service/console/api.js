// Talking to the server: every call carries the token kept in sessionStorage; a 401
// opens the token dialog and the call is retried with what the user enters.

const TOKEN_KEY = "foldserve.token";

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

let pending = null;

// Resolves with the token entered, or null when the user cancels. Calls that meet a 401
// while the dialog is open wait for the same answer.
export function askToken(reason) {
  if (pending) return pending;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  document.getElementById("token-reason").textContent = reason;
  input.value = "";
  const opener = document.activeElement;
  pending = new Promise((resolve) => {
    const finish = (value) => {
      form.onsubmit = null;
      dialog.oncancel = null;
      if (dialog.open) dialog.close();
      pending = null;
      if (opener && opener.focus) opener.focus();
      resolve(value);
    };
    form.onsubmit = (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      finish(value);
    };
    document.getElementById("token-cancel").onclick = () => finish(null);
    document.getElementById("token-forget").onclick = () => {
      sessionStorage.removeItem(TOKEN_KEY);
      finish(null);
    };
    dialog.oncancel = (event) => {
      event.preventDefault();
      finish(null);
    };
  });
  dialog.showModal();
  input.focus();
  return pending;
}

// fetch() with the token; on 401 asks for one and tries again. Returns the Response.
export async function request(path, options = {}) {
  for (;;) {
    const headers = new Headers(options.headers || {});
    const current = token();
    if (current) headers.set("Authorization", `Bearer ${current}`);
    const response = await fetch(path, { ...options, headers, cache: "no-store" });
    if (response.status !== 401) return response;
    const body = await response.json().catch(() => ({}));
    const entered = await askToken(body.error || "This server needs a token.");
    if (entered === null) throw new ApiError(401, body.error || "a token is needed", body);
  }
}

// JSON in, JSON out; a 4xx/5xx becomes an ApiError carrying the server's {"error"}.
export async function api(path, options = {}) {
  const response = await request(path, options);
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, body?.error || `${response.status} ${response.statusText}`, body);
  }
  return body;
}

// A server-sent event stream read with fetch (EventSource cannot send a token).
// Calls onEvent(name, data) per event; resolves when the stream ends.
export async function readEvents(path, onEvent, signal) {
  const response = await request(path, { signal, headers: { Accept: "text/event-stream" } });
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new ApiError(response.status, body?.error || response.statusText, body);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  }
}

// Saves a download made with the token (a plain link cannot carry the header).
export async function download(path, filename) {
  const response = await request(path);
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new ApiError(response.status, body?.error || response.statusText, body);
  }
  const url = URL.createObjectURL(await response.blob());
  const link = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// h("p.note", {text: "..."}, children): a small element builder.
export function h(spec, properties = {}, children = []) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag);
  if (classes.length) node.className = classes.join(" ");
  for (const [key, value] of Object.entries(properties)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && key !== "list" && key !== "form") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of [].concat(children)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
  }
  return node;
}

export function announce(text) {
  const region = document.getElementById("announce");
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 50);
}

export function errorBox(error) {
  return h("p.error", { role: "alert", text: error.message || String(error) });
}

export function quote(part) {
  return encodeURIComponent(part);
}

// Repeats `task` every `ms` until `signal` aborts; a 401 the user declined stops it.
export function every(ms, signal, task) {
  let timer = null;
  const tick = async () => {
    if (signal.aborted) return;
    try {
      await task();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return;
      if (error.name === "AbortError") return;
    }
    if (!signal.aborted) timer = setTimeout(tick, ms);
  };
  signal.addEventListener("abort", () => clearTimeout(timer));
  tick();
}


// The session and the API client, shared by the storefront and the console.
//
// The session (user, tokens, expiry) lives in localStorage so both pages and every tab
// share one sign-in. The access token is renewed silently before it expires; a refresh
// token works once (the server rotates it, and a second use revokes the whole login),
// so a refresh runs under a Web Lock and first looks whether another tab already did it.

const KEY = "sneakerdrop.session";
const listeners = new Set();
let current = read();
let timer = null;
let inflight = null;

export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code || "HTTP_" + status;
    this.retryAfter = retryAfter;
    this.problem = problem;
  }
}

function read() {
  try {
    const stored = JSON.parse(localStorage.getItem(KEY) || "null");
    return stored && stored.refreshToken ? stored : null;
  } catch {
    return null;
  }
}

function store(next) {
  current = next;
  if (next) localStorage.setItem(KEY, JSON.stringify(next));
  else localStorage.removeItem(KEY);
  schedule();
  for (const listener of listeners) listener(current);
}

function fromWire(wire) {
  return {
    user: wire.user,
    accessToken: wire.accessToken,
    refreshToken: wire.refreshToken,
    expiresAt: Date.now() + wire.expiresIn * 1000,
    lifetimeMs: wire.expiresIn * 1000,
  };
}

/** The signed-in user, or null. */
export const user = () => (current ? current.user : null);
export const accessToken = () => (current ? current.accessToken : null);

/** Calls `listener(session)` on every sign-in, refresh and sign-out. */
export function onChange(listener) {
  listeners.add(listener);
}

// Another tab signed in, refreshed or signed out: take its session as ours.
window.addEventListener("storage", (event) => {
  if (event.key !== KEY) return;
  current = read();
  schedule();
  for (const listener of listeners) listener(current);
});

// Renew when four fifths of the token's life have passed (at least 5 s before it ends).
function schedule() {
  clearTimeout(timer);
  if (!current) return;
  const margin = Math.max(5000, current.lifetimeMs / 5);
  const due = Math.max(0, current.expiresAt - margin - Date.now());
  timer = setTimeout(() => refresh().catch(() => {}), due);
}

/** Renews the access token (one refresh at a time across tabs). */
export function refresh() {
  if (!inflight) {
    const run = () => refreshNow().finally(() => { inflight = null; });
    inflight = navigator.locks ? navigator.locks.request(KEY, run) : run();
  }
  return inflight;
}

async function refreshNow() {
  const seen = current;
  const latest = read();
  if (!latest) return store(null);
  if (!seen || latest.refreshToken !== seen.refreshToken) {
    // Another tab renewed it while we waited for the lock.
    if (latest.expiresAt - Date.now() > latest.lifetimeMs / 5) return store(latest);
  }
  const response = await fetch("/api/auth/refresh", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refreshToken: latest.refreshToken }),
  });
  if (response.status === 401) return store(null); // revoked or expired: signed out
  if (!response.ok) throw await asError(response);
  store(fromWire(await response.json()));
}

async function asError(response) {
  let problem = {};
  try {
    problem = await response.json();
  } catch {
    problem = { title: response.statusText };
  }
  const retry = Number(response.headers.get("Retry-After"));
  return new ApiError(response.status, problem, Number.isFinite(retry) && retry > 0 ? retry : null);
}

/**
 * Calls the API; answers the parsed body (null for 204), throws ApiError on a problem.
 * An authenticated call renews a token about to expire first, and once more on a 401.
 */
export async function api(method, path, body, { auth = false, idempotencyKey = null } = {}) {
  if (auth && current && current.expiresAt - Date.now() < 5000) await refresh().catch(() => {});
  const send = () => {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth && current) headers.Authorization = "Bearer " + current.accessToken;
    if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
    return fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  };
  let response = await send();
  if (response.status === 401 && auth && current) {
    await refresh().catch(() => {});
    if (current) response = await send();
  }
  if (!response.ok) throw await asError(response);
  return response.status === 204 ? null : response.json();
}

/** Signs up or in (`mode` "signup" or "login"); answers the user. */
export async function signIn(mode, email, password, displayName) {
  const body = { email, password };
  if (mode === "signup" && displayName) body.displayName = displayName;
  const wire = await api("POST", `/api/auth/${mode}`, body);
  store(fromWire(wire));
  return wire.user;
}

/** Signs out: revokes the refresh token on the server, forgets the session here. */
export async function signOut() {
  const was = current;
  store(null);
  if (!was) return;
  await fetch("/api/auth/logout", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + was.accessToken },
    body: JSON.stringify({ refreshToken: was.refreshToken }),
  }).catch(() => {});
}

/** A fresh idempotency key: a retried click never reserves or buys twice. */
export const newKey = () =>
  crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random().toString(16).slice(2);

/**
 * The Socket.IO connection, made by `connect(options)` (the official client's `io`):
 * signed in, it carries the access token (read again at each reconnect, so a renewed
 * token is used) and so also receives `access_update`; it is made again on sign-in and
 * sign-out.
 */
export function connectSocket(connect, handlers) {
  let socket = null;
  let signedIn = Boolean(current);
  const open = () => {
    if (socket) socket.disconnect();
    socket = signedIn ? connect({ auth: (cb) => cb({ token: accessToken() || "" }) }) : connect({});
    for (const [event, handler] of Object.entries(handlers)) socket.on(event, handler);
    const mine = socket;
    // A refused token (expired in a race with its renewal) is not retried by the client
    // itself: renew it and connect again, a few seconds later.
    mine.on("connect_error", () => {
      if (!mine.active && signedIn && mine === socket) {
        setTimeout(() => refresh().catch(() => {}).then(() => mine === socket && mine.connect()), 2000);
      }
    });
  };
  onChange((now) => {
    if (Boolean(now) !== signedIn) {
      signedIn = Boolean(now);
      open();
    }
  });
  open();
}

schedule();

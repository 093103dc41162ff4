// Small helpers both pages use: elements, money, countdowns, and a sentence per error code.

/** An element: `h("button", {class: "x", onclick: f}, "text", child)`. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "text") el.textContent = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const $ = (selector, root = document) => root.querySelector(selector);

export function money(cents, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(cents / 100);
  } catch {
    return `${(cents / 100).toFixed(2)} ${currency}`;
  }
}

/** "1:05", "2:03:09", "3d 4h" for a number of milliseconds (0 when past). */
export function clock(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const days = Math.floor(total / 86400);
  if (days > 0) return `${days}d ${Math.floor((total % 86400) / 3600)}h`;
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, "0");
  return hours ? `${hours}:${String(minutes).padStart(2, "0")}:${seconds}` : `${minutes}:${seconds}`;
}

export const until = (iso) => Date.parse(iso) - Date.now();

export function when(iso) {
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

const SENTENCES = {
  SOLD_OUT: "Sold out. Holds that expire come back to stock, so keep this page open.",
  SIZE_SOLD_OUT: "Your size and your fallback sizes just sold out. Other sizes are still available.",
  SIZE_REQUIRED: "Choose a size first.",
  UNKNOWN_SIZE: "This drop does not have that size.",
  LIMIT_REACHED: "You already hold or bought as many pairs as this drop allows per person.",
  NOT_ADMITTED: "This drop lets shoppers in from its queue or draw. Join it first.",
  DROP_NOT_LIVE: "This drop is not open right now.",
  DROP_NOT_FOUND: "This drop no longer exists.",
  RESERVATION_EXPIRED: "Your hold ran out before the purchase. The pair went back to stock.",
  RESERVATION_CANCELLED: "This hold was cancelled.",
  RESERVATION_PURCHASED: "You already bought this pair.",
  RESERVATION_NOT_FOUND: "That hold was not found.",
  INVALID_CREDENTIALS: "Wrong email or password.",
  EMAIL_TAKEN: "An account with this email exists. Sign in instead.",
  UNAUTHORIZED: "Your session ended. Please sign in again.",
  FORBIDDEN: "Only admins can do this.",
  ENTRIES_CLOSED: "Entries for this draw are closed.",
  ACCESS_MODE_MISMATCH: "This drop does not work that way.",
  NOT_IN_QUEUE: "You are not in this queue yet.",
  NOT_ENTERED: "You have not entered this draw.",
  ORDER_NOT_FIXED: "The order is not fixed yet.",
  INVALID_STATE: "This drop can no longer be changed.",
  SERVICE_UNAVAILABLE: "The shop is briefly unavailable. Try again in a moment.",
  PAYLOAD_TOO_LARGE: "That was too much to send.",
};

/** The sentence a shopper or operator reads for an error. */
export function sentence(error) {
  const code = error && error.code;
  if (code === "RATE_LIMITED") {
    return `Too many tries. Try again in ${error.retryAfter || 1} s.`;
  }
  if (code === "COOLDOWN") {
    return `You released a pair moments ago. You can reserve again in ${error.retryAfter || 1} s.`;
  }
  if (code === "VALIDATION_ERROR" || code === "IDEMPOTENCY_KEY_REUSED") {
    return `Please check the form: ${error.message}`;
  }
  if (SENTENCES[code]) return SENTENCES[code];
  if (error instanceof TypeError) return "No connection to the shop. Check your network.";
  return (error && error.message) || "Something went wrong.";
}

/** A live region's message: `kind` "error" (role alert) or "ok" (role status). */
export function say(region, text, kind = "ok") {
  region.textContent = text || "";
  region.dataset.kind = kind;
  region.hidden = !text;
}

/** A plain sneaker silhouette, for drops without a same-origin image. */
export function sneaker(seed) {
  let hash = 0;
  for (const ch of String(seed)) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 120 60");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "art hue-" + (hash % 6));
  const shoe = document.createElementNS(ns, "path");
  shoe.setAttribute(
    "d",
    "M8 40 C8 28 14 22 22 20 L38 14 C44 22 56 26 70 28 C86 30 100 32 108 38 C112 41 112 46 108 48 L12 48 C9 48 8 45 8 40 Z",
  );
  const sole = document.createElementNS(ns, "path");
  sole.setAttribute("d", "M8 46 L112 46 L110 52 L10 52 Z");
  sole.setAttribute("class", "sole");
  svg.append(shoe, sole);
  return svg;
}

/** Same-origin image URLs only: the page's CSP (and its offline promise) forbid others. */
export const ownImage = (url) => typeof url === "string" && url.startsWith("/") && !url.startsWith("//");

// The storefront (/): drops with live stock, sign-in, reserve, queue, draw and purchase.
// It talks to the public API only; stock and access changes arrive over Socket.IO.
import * as auth from "/static/session.js";
import { $, clock, h, money, ownImage, say, sentence, sneaker, until, when } from "/static/ui.js";

const state = {
  drops: new Map(), // id -> Drop
  holds: [], // my ACTIVE reservations
  purchases: [],
  tickets: new Map(), // dropId -> Ticket (queue drops)
  entries: new Map(), // dropId -> Entry (draw drops)
  queues: new Map(), // dropId -> public queue figures
  picks: new Map(), // dropId -> {size, fallbacks: []}
  busy: new Set(), // dropIds with a request in flight
  pending: new Set(), // dropIds whose refetch is due (countdown reached zero)
  // Bumped by every action of the shopper: a read that started before one is stale (a
  // hold or ticket just made would be lost to a list fetched a moment earlier).
  epoch: 0,
};
const cards = new Map(); // dropId -> article element
const message = $("#message");
const MAX_FALLBACKS = 5;

// ---- data ------------------------------------------------------------------------

async function loadDrops() {
  try {
    const drops = await auth.api("GET", "/api/drops");
    state.drops = new Map(drops.map((d) => [d.id, d]));
    renderAll();
  } catch (error) {
    say(message, sentence(error), "error");
  }
}

async function refetchDrop(dropId) {
  try {
    state.drops.set(dropId, await auth.api("GET", `/api/drops/${dropId}`));
  } catch (error) {
    if (error.code === "DROP_NOT_FOUND") state.drops.delete(dropId);
  }
  renderCard(dropId);
}

async function loadMine() {
  if (!auth.user()) {
    state.holds = [];
    state.purchases = [];
    state.tickets.clear();
    state.entries.clear();
    renderAll();
    return;
  }
  const epoch = state.epoch;
  try {
    const [holds, purchases] = await Promise.all([
      auth.api("GET", "/api/me/reservations", undefined, { auth: true }),
      auth.api("GET", "/api/me/purchases", undefined, { auth: true }),
    ]);
    if (epoch !== state.epoch) return loadMine();
    state.holds = holds.filter((r) => r.status === "ACTIVE");
    state.purchases = purchases;
    await Promise.all([...state.drops.values()].map(loadAccess));
  } catch (error) {
    say(message, sentence(error), "error");
  }
  renderAll();
}

async function loadAccess(drop) {
  const path = drop.access === "queue" ? "queue/me" : drop.access === "draw" ? "entries/me" : null;
  if (!path || !auth.user()) return;
  const into = drop.access === "queue" ? state.tickets : state.entries;
  const epoch = state.epoch;
  try {
    const found = await auth.api("GET", `/api/drops/${drop.id}/${path}`, undefined, { auth: true });
    if (epoch === state.epoch) into.set(drop.id, found);
  } catch (error) {
    const none = error.code === "NOT_IN_QUEUE" || error.code === "NOT_ENTERED";
    if (none && epoch === state.epoch) into.delete(drop.id);
  }
}

// ---- actions ---------------------------------------------------------------------

async function act(dropId, work) {
  if (state.busy.has(dropId)) return;
  state.busy.add(dropId);
  state.epoch += 1;
  renderCard(dropId);
  try {
    await work();
    state.epoch += 1;
  } catch (error) {
    say(message, sentence(error), "error");
    if (["SOLD_OUT", "SIZE_SOLD_OUT", "RESERVATION_EXPIRED", "RESERVATION_CANCELLED"].includes(error.code)) {
      await Promise.all([refetchDrop(dropId), loadMine()]);
    }
  } finally {
    state.busy.delete(dropId);
    renderCard(dropId);
  }
}

function reserve(drop) {
  drop = state.drops.get(drop.id) || drop;
  return act(drop.id, async () => {
    const pick = pickOf(drop.id);
    const body = {};
    if (drop.sizes.length) {
      if (!pick.size) throw { code: "SIZE_REQUIRED" };
      body.size = pick.size;
      body.fallbackSizes = pick.fallbacks.filter((s) => s !== pick.size);
    }
    const hold = await auth.api("POST", `/api/drops/${drop.id}/reserve`, body, {
      auth: true,
      idempotencyKey: auth.newKey(),
    });
    state.holds.push(hold);
    const other = hold.size && hold.size !== pick.size ? ` (${pick.size} was gone, so you got ${hold.size})` : "";
    say(message, `Held for you: ${drop.name}${hold.size ? ", " + hold.size : ""}${other}. Buy before the timer ends.`);
  });
}

function buy(drop, hold) {
  drop = state.drops.get(drop.id) || drop;
  return act(drop.id, async () => {
    const purchase = await auth.api("POST", `/api/reservations/${hold.id}/purchase`, undefined, { auth: true });
    state.holds = state.holds.filter((r) => r.id !== hold.id);
    if (!state.purchases.some((p) => p.id === purchase.id)) state.purchases.unshift(purchase);
    if (state.entries.has(drop.id)) await loadAccess(drop);
    say(message, `Bought: ${drop.name}${purchase.size ? ", " + purchase.size : ""}. Enjoy the pair.`);
  });
}

function release(drop, hold) {
  drop = state.drops.get(drop.id) || drop;
  return act(drop.id, async () => {
    await auth.api("DELETE", `/api/reservations/${hold.id}`, undefined, { auth: true });
    state.holds = state.holds.filter((r) => r.id !== hold.id);
    say(message, "Released. The pair went back to stock.");
  });
}

function joinQueue(drop) {
  drop = state.drops.get(drop.id) || drop;
  return act(drop.id, async () => {
    const ticket = await auth.api("POST", `/api/drops/${drop.id}/queue`, {}, { auth: true });
    state.tickets.set(drop.id, ticket);
    say(message, `You joined the queue for ${drop.name}.`);
  });
}

function enterDraw(drop) {
  drop = state.drops.get(drop.id) || drop;
  return act(drop.id, async () => {
    const pick = pickOf(drop.id);
    const body = {};
    if (drop.sizes.length) {
      if (!pick.size) throw { code: "SIZE_REQUIRED" };
      body.size = pick.size;
      body.fallbackSizes = pick.fallbacks.filter((s) => s !== pick.size);
    }
    state.entries.set(drop.id, await auth.api("POST", `/api/drops/${drop.id}/entries`, body, { auth: true }));
    say(message, `You entered the draw for ${drop.name}.`);
  });
}

function pickOf(dropId) {
  if (!state.picks.has(dropId)) state.picks.set(dropId, { size: null, fallbacks: [] });
  return state.picks.get(dropId);
}

// ---- rendering -------------------------------------------------------------------

function renderAll() {
  const root = $("#drops");
  for (const [id, card] of cards) {
    if (!state.drops.has(id)) {
      card.remove();
      cards.delete(id);
    }
  }
  for (const id of state.drops.keys()) renderCard(id);
  const order = [...state.drops.keys()].map((id) => cards.get(id));
  if (order.some((card, i) => root.children[i] !== card)) root.replaceChildren(...order);
  $("#empty").hidden = state.drops.size > 0;
  renderMine();
}

/** Builds the drop's card again, keeping keyboard focus where it was. */
function renderCard(dropId) {
  const drop = state.drops.get(dropId);
  if (!drop) return;
  let card = cards.get(dropId);
  const focused = card && card.contains(document.activeElement) ? document.activeElement.dataset.key : null;
  const fresh = h("article", { class: "drop", "data-drop-id": drop.id, "aria-labelledby": `t-${drop.id}` }, cardBody(drop));
  // Unchanged markup stays as it is: replacing a button between a press and its release
  // would swallow the click. (Handlers look the drop up again when they run.)
  if (card && card.innerHTML === fresh.innerHTML) {
    card.dataset.status = drop.status;
    return renderMine();
  }
  if (card) card.replaceChildren(...fresh.childNodes);
  else {
    card = fresh;
    cards.set(dropId, card);
    $("#drops").append(card);
  }
  card.dataset.status = drop.status;
  if (focused) {
    const again = card.querySelector(`[data-key="${CSS.escape(focused)}"]`);
    if (again && !again.disabled) again.focus();
  }
  renderMine();
}

function cardBody(drop) {
  const art = ownImage(drop.imageUrl) ? h("img", { class: "art", src: drop.imageUrl, alt: "" }) : sneaker(drop.id);
  const left = drop.availableStock;
  return [
    h("div", { class: "art-box" }, art, h("span", { class: `badge ${drop.status}` }, label(drop.status))),
    h("div", { class: "body" },
      h("p", { class: "brand" }, drop.brand || "\u00a0"),
      h("h2", { id: `t-${drop.id}` }, drop.name),
      h("p", { class: "price" }, money(drop.priceCents, drop.currency),
        drop.access && drop.access !== "open" ? h("span", { class: "mode" }, drop.access === "queue" ? "Queue" : "Draw") : null),
      schedule(drop),
      h("p", { class: "stock" }, h("b", { "data-stock": "" }, String(left)), ` of ${drop.totalStock} left`,
        drop.activeReservations ? h("span", { class: "held" }, ` · ${drop.activeReservations} on hold`) : null),
      drop.sizes.length ? sizePicker(drop) : null,
      h("div", { class: "actions" }, actions(drop)),
    ),
  ];
}

function label(status) {
  return { scheduled: "Soon", live: "Live", sold_out: "Sold out", ended: "Ended", cancelled: "Cancelled" }[status] || status;
}

function schedule(drop) {
  if (drop.status === "scheduled") {
    return h("p", { class: "when" }, "Opens in ", timer(drop.startsAt, "opens"), h("span", { class: "quiet" }, ` · ${when(drop.startsAt)}`));
  }
  if (drop.access === "draw" && drop.draw && drop.status !== "cancelled" && until(drop.draw.closesAt) > 0) {
    return h("p", { class: "when" }, "Draw in ", timer(drop.draw.closesAt, "draw"));
  }
  if (drop.endsAt && drop.status === "live") {
    return h("p", { class: "when quiet" }, `Ends ${when(drop.endsAt)}`);
  }
  return null;
}

/** A countdown: the tick below rewrites every `[data-deadline]` each second. */
function timer(iso, key) {
  return h("time", { role: "timer", datetime: iso, "data-deadline": iso, "data-timer": key }, clock(until(iso)));
}

function sizePicker(drop) {
  const pick = pickOf(drop.id);
  const group = `size-${drop.id}`;
  const sizes = h("fieldset", { class: "sizes" }, h("legend", {}, "Size"),
    drop.sizes.map((s) => {
      const out = s.availableStock <= 0;
      return h("label", { class: out ? "size out" : "size", "data-size": s.size },
        h("input", {
          type: "radio", name: group, value: s.size, "data-key": `size:${s.size}`,
          checked: pick.size === s.size,
          onchange: () => { pick.size = s.size; pick.fallbacks = pick.fallbacks.filter((f) => f !== s.size); renderCard(drop.id); },
        }),
        h("span", { class: "label" }, s.size),
        h("small", { "data-left": "" }, out ? "sold out" : `${s.availableStock} left`));
    }));
  if (!pick.size) return sizes;
  const fallbacks = h("fieldset", { class: "fallbacks" },
    h("legend", {}, `If ${pick.size} is gone, try (in the order you tick)`),
    drop.sizes.filter((s) => s.size !== pick.size).map((s) => {
      const at = pick.fallbacks.indexOf(s.size);
      return h("label", { class: s.availableStock <= 0 ? "size out" : "size" },
        h("input", {
          type: "checkbox", value: s.size, "data-fallback": "", "data-key": `fb:${s.size}`,
          checked: at >= 0,
          disabled: at < 0 && pick.fallbacks.length >= MAX_FALLBACKS,
          onchange: (event) => {
            pick.fallbacks = event.target.checked ? [...pick.fallbacks, s.size] : pick.fallbacks.filter((f) => f !== s.size);
            renderCard(drop.id);
          },
        }),
        h("span", { class: "label" }, s.size),
        at >= 0 ? h("small", {}, `#${at + 1}`) : null);
    }));
  return [sizes, fallbacks];
}

function actions(drop) {
  const busy = state.busy.has(drop.id);
  if (drop.status === "cancelled" || drop.status === "ended") {
    return h("p", { class: "quiet" }, drop.status === "cancelled" ? "This drop was cancelled." : "This drop has ended.");
  }
  if (!auth.user()) {
    return h("button", { type: "button", class: "secondary", "data-key": "signin", onclick: () => $("#email").focus() },
      drop.access === "queue" ? "Sign in to join the queue" : drop.access === "draw" ? "Sign in to enter the draw" : "Sign in to reserve");
  }
  const holds = state.holds.filter((r) => r.dropId === drop.id).map((hold) => holdPanel(drop, hold, busy));
  if (drop.access === "queue") return [...holds, queuePanel(drop, busy)];
  if (drop.access === "draw") return [...holds, drawPanel(drop, busy)];
  return [...holds, reserveButton(drop, busy)];
}

function reserveButton(drop, busy) {
  const mine = state.holds.filter((r) => r.dropId === drop.id).length
    + state.purchases.filter((p) => p.dropId === drop.id).length;
  if (mine >= drop.perUserLimit) {
    return h("p", { class: "quiet" }, mine > state.holds.filter((r) => r.dropId === drop.id).length ? "You bought this one." : null);
  }
  const open = drop.status === "live" && drop.availableStock > 0;
  const text = drop.status === "scheduled" ? "Opens soon" : drop.availableStock > 0 ? "Reserve" : "Sold out";
  return h("button", { type: "button", "data-key": "reserve", disabled: !open || busy, onclick: () => reserve(drop) },
    busy ? "Reserving…" : text);
}

function holdPanel(drop, hold, busy) {
  return h("div", { class: "hold", "data-hold-id": hold.id },
    h("p", {}, "Held for you", hold.size ? h("b", {}, ` ${hold.size}`) : null, " · ", timer(hold.expiresAt, "hold"), " left"),
    h("div", { class: "row" },
      h("button", { type: "button", "data-key": "buy", disabled: busy, onclick: () => buy(drop, hold) }, `Buy · ${money(drop.priceCents, drop.currency)}`),
      h("button", { type: "button", class: "secondary", "data-key": "release", disabled: busy, onclick: () => release(drop, hold) }, "Release")));
}

function queuePanel(drop, busy) {
  const ticket = state.tickets.get(drop.id);
  const box = (...children) => h("div", { class: "access", "data-access": ticket ? ticket.status : "none", role: "group", "aria-label": "Queue" }, ...children);
  if (!ticket) {
    if (drop.status === "sold_out") return box(h("p", { class: "quiet" }, "Sold out. The queue reopens if stock comes back."));
    return box(h("button", { type: "button", "data-key": "join", disabled: busy, onclick: () => joinQueue(drop) }, "Join the queue"));
  }
  if (ticket.status === "waiting" && ticket.position == null) {
    return box(h("p", {}, "You're in the waiting room. Places are drawn at random when the drop opens; joining early gives no better place."));
  }
  if (ticket.status === "waiting") {
    const wait = ticket.estimatedWaitSeconds;
    return box(h("p", { class: "position" }, "Position ", h("b", { "data-position": "" }, String(ticket.position))),
      h("p", {}, h("span", { "data-ahead": "" }, String(ticket.ahead)), " ahead of you",
        wait != null ? ` · about ${clock(wait * 1000)} to wait` : ""));
  }
  if (ticket.status === "admitted") {
    return box(h("p", { class: "in" }, "You're in! Your pass ends in ", timer(ticket.passExpiresAt, "pass")), reserveButton(drop, busy));
  }
  if (ticket.status === "expired") return box(h("p", {}, "Your pass expired."));
  return box(h("p", {}, "Closed: ", drop.status === "sold_out" ? "sold out for now." : "this drop is over."));
}

function drawPanel(drop, busy) {
  const entry = state.entries.get(drop.id);
  const fair = h("a", { href: `/api/drops/${drop.id}/fairness`, class: "fair" }, "Fairness record");
  const box = (...children) => h("div", { class: "access", "data-access": entry ? entry.status : "none", role: "group", "aria-label": "Draw" }, ...children, fair);
  if (!entry) {
    const opensIn = until(drop.startsAt);
    const closesIn = drop.draw ? until(drop.draw.closesAt) : 0;
    if (opensIn > 0) return box(h("p", {}, "Entries open in ", timer(drop.startsAt, "entries")));
    if (closesIn <= 0) return box(h("p", { class: "quiet" }, "Entries are closed."));
    return box(h("button", { type: "button", "data-key": "enter", disabled: busy, onclick: () => enterDraw(drop) }, "Enter the draw"));
  }
  const sizes = [entry.size, ...(entry.fallbackSizes || [])].filter(Boolean).join(", then ");
  if (entry.status === "entered") {
    return box(h("p", {}, "You're in the draw", sizes ? ` for ${sizes}` : "", ". ",
      drop.draw && until(drop.draw.closesAt) > 0 ? ["Result in ", timer(drop.draw.closesAt, "result")] : "Drawing…"));
  }
  if (entry.status === "won") {
    const bought = state.purchases.some((p) => p.reservationId === entry.reservationId);
    return box(h("p", { class: "in", "data-result": "won" }, bought ? "You won, and the pair is yours." : "You won! Your pair is held for you above."));
  }
  if (entry.status === "standby") {
    return box(h("p", { "data-result": "standby" }, `On standby (#${entry.position}). If a winner does not buy, the pair passes to you.`));
  }
  return box(h("p", { "data-result": "lost" }, "Not this time. Thanks for entering."));
}

function renderMine() {
  const signedIn = Boolean(auth.user());
  $("#mine").hidden = !signedIn;
  if (!signedIn) return;
  const name = (id) => (state.drops.get(id) || { name: "A drop" }).name;
  const holds = state.holds.map((r) =>
    h("li", {}, `${name(r.dropId)}${r.size ? " · " + r.size : ""} · `, timer(r.expiresAt, "mine"), " left"));
  const bought = state.purchases.map((p) =>
    h("li", {}, `${name(p.dropId)}${p.size ? " · " + p.size : ""} · ${money(p.priceCents, p.currency)} · ${when(p.purchasedAt)}`));
  $("#my-holds").replaceChildren(...(holds.length ? holds : [h("li", { class: "quiet" }, "No holds right now.")]));
  $("#my-purchases").replaceChildren(...(bought.length ? bought : [h("li", { class: "quiet" }, "Nothing bought yet.")]));
}

function renderAccount() {
  const user = auth.user();
  $("#account-form").hidden = Boolean(user);
  $("#account-in").hidden = !user;
  $("#who").textContent = user ? `Signed in as ${user.displayName || user.email}` : "";
}

// ---- live updates ----------------------------------------------------------------

function onStock({ dropId, availableStock, sizes }) {
  const drop = state.drops.get(dropId);
  if (!drop) return scheduleReload();
  drop.availableStock = availableStock;
  if (sizes) for (const s of drop.sizes) if (s.size in sizes) s.availableStock = sizes[s.size];
  if (drop.status === "live" && availableStock === 0) drop.status = "sold_out";
  else if (drop.status === "sold_out" && availableStock > 0) drop.status = "live";
  patchStock(drop);
}

/** Stock figures only, in place: a push must not rebuild what the shopper is using. */
function patchStock(drop) {
  const card = cards.get(drop.id);
  if (!card) return;
  if (card.dataset.status !== drop.status) return renderCard(drop.id);
  $("[data-stock]", card).textContent = String(drop.availableStock);
  for (const s of drop.sizes) {
    const box = card.querySelector(`.sizes [data-size="${CSS.escape(s.size)}"]`);
    if (!box) continue;
    box.classList.toggle("out", s.availableStock <= 0);
    $("[data-left]", box).textContent = s.availableStock <= 0 ? "sold out" : `${s.availableStock} left`;
  }
  const button = card.querySelector('[data-key="reserve"]');
  if (button && !state.busy.has(drop.id)) button.disabled = !(drop.status === "live" && drop.availableStock > 0);
}

function onAccess({ dropId, kind, ticket, entry }) {
  if (kind === "queue" && ticket) state.tickets.set(dropId, ticket);
  if (kind === "draw" && entry) {
    state.entries.set(dropId, entry);
    if (entry.status === "won") loadMine();
  }
  renderCard(dropId);
}

let reloadDue = null;
function scheduleReload() {
  if (!reloadDue) reloadDue = setTimeout(() => { reloadDue = null; loadDrops().then(loadMine); }, 200);
}

// Each second: countdowns, and what a passed deadline changes.
let lastPoll = 0;
function tick() {
  for (const el of document.querySelectorAll("[data-deadline]")) el.textContent = clock(until(el.dataset.deadline));
  const now = Date.now();
  const before = state.holds.length;
  state.holds = state.holds.filter((r) => Date.parse(r.expiresAt) > now);
  if (state.holds.length !== before) { say(message, "A hold ran out; the pair went back to stock.", "error"); renderAll(); }
  const poll = now - lastPoll >= 2000;
  if (poll) lastPoll = now;
  for (const drop of state.drops.values()) {
    if (drop.status === "scheduled" && until(drop.startsAt) <= 0) dueRefetch(drop.id);
    if (!poll || !auth.user()) continue;
    const ticket = state.tickets.get(drop.id);
    if (ticket && (ticket.status === "waiting" || (ticket.status === "admitted" && until(ticket.passExpiresAt) <= 0))) {
      refreshAccess(drop);
    }
    const entry = state.entries.get(drop.id);
    // The result comes as a push within seconds of the draw; reading it is the fallback.
    if (entry && entry.status === "entered" && drop.draw && until(drop.draw.closesAt) <= -15000) refreshAccess(drop);
  }
}

async function dueRefetch(dropId) {
  if (state.pending.has(dropId)) return;
  state.pending.add(dropId);
  await refetchDrop(dropId);
  const drop = state.drops.get(dropId);
  // The server decides when the drop opens; ask again shortly if it still says scheduled.
  setTimeout(() => state.pending.delete(dropId), drop && drop.status === "scheduled" ? 250 : 0);
  if (drop) await loadAccess(drop).then(() => renderCard(dropId));
}

/** Queue places move without a push (only status changes are pushed): read them again. */
async function refreshAccess(drop) {
  const key = "access:" + drop.id;
  if (state.pending.has(key)) return;
  state.pending.add(key);
  const before = JSON.stringify([state.tickets.get(drop.id), state.entries.get(drop.id)]);
  try {
    await loadAccess(drop);
  } finally {
    state.pending.delete(key);
  }
  if (JSON.stringify([state.tickets.get(drop.id), state.entries.get(drop.id)]) !== before) {
    const entry = state.entries.get(drop.id);
    if (entry && entry.status === "won") await loadMine();
    renderCard(drop.id);
  }
}

// ---- start -----------------------------------------------------------------------

$("#account-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const mode = event.submitter && event.submitter.value === "signup" ? "signup" : "login";
  const form = event.target;
  try {
    const user = await auth.signIn(mode, form.email.value, form.password.value, form.displayName.value.trim());
    form.password.value = "";
    say(message, `Welcome${mode === "login" ? " back" : ""}, ${user.displayName || user.email}.`);
  } catch (error) {
    say(message, sentence(error), "error");
  }
});
$("#signout").addEventListener("click", () => auth.signOut().then(() => say(message, "Signed out.")));

auth.onChange(() => {
  renderAccount();
  renderAll(); // the cards' actions follow the sign-in at once, before the holds arrive
  loadMine();
});

auth.connectSocket((options) => io(options), {
  connect: () => { $("#live").dataset.on = "1"; $("#live-text").textContent = "Live"; },
  disconnect: () => { $("#live").dataset.on = ""; $("#live-text").textContent = "Reconnecting"; },
  stock_update: onStock,
  access_update: onAccess,
});

renderAccount();
loadDrops().then(loadMine);
setInterval(tick, 1000);

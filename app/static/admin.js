// The operator console (/admin): drops, their live chart, invariant and fairness record.
// It uses the public admin routes (create, patch, restock) and the admin JSON routes
// (/api/admin/...), which refuse anyone but an admin: the page itself holds nothing private.
import * as auth from "/static/session.js";
import { bars, lines } from "/static/chart.js";
import { verify } from "/static/fairness.js";
import { $, h, money, say, sentence, when } from "/static/ui.js";

const OUTCOMES = ["OK", "SOLD_OUT", "SIZE_SOLD_OUT", "LIMIT_REACHED", "OTHER"];
const OUTCOME_COLOURS = { OK: "#1f8a3b", SOLD_OUT: "#c0392b", SIZE_SOLD_OUT: "#e67e22", LIMIT_REACHED: "#7d3c98", OTHER: "#5d6d7e" };
const OUTCOME_CLASS = { OK: "k-ok", SOLD_OUT: "k-sold", SIZE_SOLD_OUT: "k-size", LIMIT_REACHED: "k-limit", OTHER: "k-other" };
const LEVELS = ["liveHolds", "sold", "availableStock", "waiting", "admitted"];
const LEVEL_COLOURS = { liveHolds: "#0b5cad", sold: "#14151a", availableStock: "#17a2b8", waiting: "#b7950b", admitted: "#6c3483" };
const LEVEL_NAMES = { liveHolds: "Live holds", sold: "Sold", availableStock: "Available", waiting: "Queue waiting", admitted: "Queue admitted" };
const LEVEL_CLASS = { liveHolds: "k-held", sold: "k-sold-line", availableStock: "k-avail", waiting: "k-wait", admitted: "k-admit" };
const HISTORY = 60;

/** Replaces `el`'s children; like `h`, it skips null children and flattens arrays. */
const fill = (el, ...children) => el.replaceChildren(...h("div", {}, ...children).childNodes);

const state = { drops: new Map(), selected: null, history: [], stats: null, invariant: null, queue: null, allowed: false };
const message = $("#message");
const get = (path) => auth.api("GET", path, undefined, { auth: true });
const send = (method, path, body) => auth.api(method, path, body, { auth: true, idempotencyKey: method === "POST" ? auth.newKey() : null });

// ---- who may use it ----------------------------------------------------------------

async function checkAccess() {
  const user = auth.user();
  $("#account-form").hidden = Boolean(user);
  $("#account-in").hidden = !user;
  $("#who").textContent = user ? `Signed in as ${user.displayName || user.email} (${user.role})` : "";
  $("#refused").hidden = true;
  state.allowed = false;
  $("#console").hidden = true;
  if (!user) return;
  try {
    await get("/api/admin/invariant"); // the server decides, not the role in the session
    state.allowed = true;
    $("#console").hidden = false;
    await loadDrops();
  } catch (error) {
    const refused = $("#refused");
    refused.hidden = false;
    refused.textContent = error.code === "FORBIDDEN"
      ? `403 FORBIDDEN: this console is for admins only. ${user.email} is a ${user.role} account.`
      : sentence(error);
    refused.dataset.code = error.code;
  }
}

// ---- drops -------------------------------------------------------------------------

async function loadDrops() {
  const drops = await auth.api("GET", "/api/drops?status=all");
  state.drops = new Map(drops.map((d) => [d.id, d]));
  renderList();
}

function renderList() {
  const items = [...state.drops.values()].map((drop) =>
    h("li", {}, h("button", {
      type: "button", "data-drop-id": drop.id, "aria-current": drop.id === state.selected ? "true" : "false",
      onclick: () => select(drop.id),
    }, h("span", {}, drop.name), h("small", {}, `${drop.status} · ${drop.availableStock}/${drop.totalStock}`))));
  $("#droplist").replaceChildren(...(items.length ? items : [h("li", { class: "quiet" }, "No drops yet.")]));
}

function select(dropId) {
  state.selected = dropId;
  state.history = [];
  state.stats = null;
  state.invariant = null;
  state.queue = null;
  renderList();
  renderDetail();
  poll(true);
  $("#detail-title").focus();
}

// ---- the selected drop ---------------------------------------------------------------

function renderDetail() {
  const drop = state.drops.get(state.selected);
  const title = $("#detail-title");
  title.tabIndex = -1;
  if (!drop) {
    title.textContent = "Choose a drop";
    $("#detail-body").replaceChildren();
    return;
  }
  title.textContent = drop.name;
  const legendOutcomes = OUTCOMES.map((k) => h("li", {}, h("span", { class: OUTCOME_CLASS[k] }), k.replaceAll("_", " ").toLowerCase()));
  const levels = LEVELS.filter((k) => drop.access === "queue" || (k !== "waiting" && k !== "admitted"));
  const legendLevels = levels.map((k) => h("li", {}, h("span", { class: LEVEL_CLASS[k] }), LEVEL_NAMES[k]));
  fill($("#detail-body"),
    h("p", { class: "quiet" }, `${drop.brand || ""} · ${money(drop.priceCents, drop.currency)} · ${drop.access || "open"} · `,
      h("b", {}, drop.status), ` · starts ${when(drop.startsAt)}`, drop.endsAt ? ` · ends ${when(drop.endsAt)}` : ""),
    h("div", { class: "figures", id: "figures" }),
    h("h3", {}, "Reserves per second, by outcome"),
    h("ul", { class: "legend" }, legendOutcomes),
    h("canvas", { class: "chart", id: "chart-outcomes", role: "img", "aria-describedby": "summary" }),
    h("h3", {}, "Holds, sales and stock"),
    h("ul", { class: "legend" }, legendLevels),
    h("canvas", { class: "chart", id: "chart-levels", role: "img", "aria-describedby": "summary" }),
    h("p", { id: "summary", class: "quiet" }, "Waiting for the first figures…"),
    drop.sizes.length ? [h("h3", {}, "Stock per size"), h("div", { id: "sizes" })] : null,
    h("h3", {}, "Invariant"),
    h("div", { id: "invariant" }, h("p", { class: "quiet" }, "Checking…")),
    h("h3", {}, "Change this drop"),
    changeForms(drop),
    drop.access === "queue" || drop.access === "draw" ? fairnessPanel(drop) : null,
  );
  paint();
}

function changeForms(drop) {
  const closed = drop.status === "cancelled" || drop.status === "ended";
  if (closed) return h("p", { class: "quiet" }, `This drop is ${drop.status}; it can no longer be changed.`);
  const restock = h("form", { class: "row", id: "restock", onsubmit: (e) => submit(e, async (f) => {
    const body = { quantity: Number(f.quantity.value) };
    if (drop.sizes.length) body.size = f.size.value;
    state.drops.set(drop.id, await send("POST", `/api/drops/${drop.id}/restock`, body));
    return `Restocked ${body.quantity}${body.size ? " in " + body.size : ""}.`;
  }) },
    drop.sizes.length ? [h("label", { for: "r-size" }, "Size"), h("select", { id: "r-size", name: "size" }, drop.sizes.map((s) => h("option", { value: s.size }, s.size)))] : null,
    h("label", { for: "r-qty" }, "Units"), h("input", { id: "r-qty", name: "quantity", type: "number", min: 1, max: 1000000, value: 10, required: true }),
    h("button", { type: "submit" }, "Restock"));
  const rename = h("form", { class: "row", onsubmit: (e) => submit(e, async (f) => {
    state.drops.set(drop.id, await send("PATCH", `/api/drops/${drop.id}`, { name: f.name.value }));
    return "Renamed.";
  }) }, h("label", { for: "p-name" }, "Name"), h("input", { id: "p-name", name: "name", value: drop.name, required: true, maxlength: 200 }),
    h("button", { type: "submit", class: "secondary" }, "Rename"));
  const reschedule = h("form", { class: "row", onsubmit: (e) => submit(e, async (f) => {
    const body = {};
    if (f.startsAt.value) body.startsAt = new Date(f.startsAt.value).toISOString();
    if (f.endsAt.value) body.endsAt = new Date(f.endsAt.value).toISOString();
    state.drops.set(drop.id, await send("PATCH", `/api/drops/${drop.id}`, body));
    return "Rescheduled.";
  }) }, h("label", { for: "p-starts" }, "Starts"), h("input", { id: "p-starts", name: "startsAt", type: "datetime-local", step: 1, value: local(drop.startsAt) }),
    h("label", { for: "p-ends" }, "Ends"), h("input", { id: "p-ends", name: "endsAt", type: "datetime-local", step: 1, value: drop.endsAt ? local(drop.endsAt) : "" }),
    h("button", { type: "submit", class: "secondary" }, "Reschedule"));
  let armed = false;
  const cancel = h("button", { type: "button", class: "danger", onclick: async (event) => {
    if (!armed) {
      armed = true;
      event.target.textContent = "Really cancel? Live holds are released.";
      return;
    }
    try {
      state.drops.set(drop.id, await send("PATCH", `/api/drops/${drop.id}`, { status: "cancelled" }));
      say(message, `${drop.name} was cancelled.`);
      renderList();
      renderDetail();
    } catch (error) {
      say(message, sentence(error), "error");
    }
  } }, "Cancel drop");
  return h("div", { class: "stack" }, restock, rename, reschedule, h("div", {}, cancel));
}

async function submit(event, work) {
  event.preventDefault();
  try {
    say(message, await work(event.target));
    renderList();
    renderDetail();
  } catch (error) {
    say(message, sentence(error), "error");
  }
}

const local = (iso) => {
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
};

// ---- live figures, once a second -------------------------------------------------------

let polling = false;
let invariantAt = 0;
async function poll(force = false) {
  const drop = state.drops.get(state.selected);
  if (!state.allowed || !drop || (polling && !force)) return;
  polling = true;
  try {
    const wanted = [get(`/api/admin/drops/${drop.id}/stats`)];
    const now = Date.now();
    if (force || now - invariantAt > 2000) {
      invariantAt = now;
      wanted.push(get(`/api/admin/drops/${drop.id}/invariant`).then((v) => { state.invariant = v; }));
    }
    if (drop.access === "queue") {
      wanted.push(auth.api("GET", `/api/drops/${drop.id}/queue`).then((q) => { state.queue = q; }, () => {}));
    }
    const [stats] = await Promise.all(wanted);
    if (state.selected !== drop.id) return;
    state.stats = stats;
    state.history.push({
      liveHolds: stats.liveHolds, sold: stats.sold, availableStock: stats.availableStock,
      waiting: state.queue ? state.queue.waiting : null, admitted: state.queue ? state.queue.admitted : null,
    });
    if (state.history.length > HISTORY) state.history.shift();
    paint();
  } catch (error) {
    if (error.code === "FORBIDDEN" || error.code === "UNAUTHORIZED") checkAccess();
  } finally {
    polling = false;
  }
}

function paint() {
  const stats = state.stats;
  const drop = state.drops.get(state.selected);
  if (!stats || !drop || !$("#chart-outcomes")) return;
  const rows = stats.seconds.map((s) => {
    const row = { OTHER: 0 };
    for (const [code, n] of Object.entries(s.outcomes)) {
      if (OUTCOMES.includes(code)) row[code] = n;
      else row.OTHER += n;
    }
    return row;
  });
  bars($("#chart-outcomes"), rows, OUTCOMES, OUTCOME_COLOURS);
  const levels = LEVELS.filter((k) => drop.access === "queue" || (k !== "waiting" && k !== "admitted"));
  lines($("#chart-levels"), state.history, levels, LEVEL_COLOURS);
  const sums = {};
  for (const row of rows) for (const k of OUTCOMES) sums[k] = (sums[k] || 0) + (row[k] || 0);
  const lastSecond = rows.length ? Object.values(rows[rows.length - 1]).reduce((a, b) => a + b, 0) : 0;
  const total = Object.values(sums).reduce((a, b) => a + b, 0);
  const summary = $("#summary");
  summary.dataset.ok = String(sums.OK || 0);
  summary.dataset.total = String(total);
  summary.textContent = `Last ${rows.length} s: ${total} reserves (${OUTCOMES.filter((k) => sums[k]).map((k) => `${k} ${sums[k]}`).join(", ") || "none"}). `
    + `Now: ${stats.liveHolds} held, ${stats.sold} sold, ${stats.availableStock} of ${stats.totalStock} available`
    + (state.queue ? `; queue ${state.queue.waiting} waiting, ${state.queue.admitted} admitted.` : ".");
  const figure = (name, value, key) => h("div", { class: "figure" }, h("b", { "data-figure": key }, String(value)), name);
  $("#figures").replaceChildren(
    figure("available", stats.availableStock, "available"), figure("live holds", stats.liveHolds, "holds"),
    figure("sold", stats.sold, "sold"), figure("total", stats.totalStock, "total"), figure("reserves last second", lastSecond, "rate"),
    ...(state.queue ? [figure("waiting", state.queue.waiting, "waiting"), figure("admitted", state.queue.admitted, "admitted")] : []));
  if ($("#sizes")) {
    fill($("#sizes"), h("table", {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Size"), ...["Available", "Held", "Sold", "Total"].map((t) => h("th", { scope: "col", class: "num" }, t)))),
      h("tbody", {}, stats.sizes.map((s) => h("tr", { "data-size": s.size }, h("th", { scope: "row" }, s.size),
        h("td", { class: "num", "data-available": "" }, String(s.availableStock)), h("td", { class: "num" }, String(s.liveHolds)),
        h("td", { class: "num" }, String(s.sold)), h("td", { class: "num" }, String(s.totalStock)))))));
  }
  const inv = state.invariant;
  if (inv) {
    fill($("#invariant"),
      h("p", {}, h("span", { class: inv.healthy ? "healthy" : "drifted", "data-healthy": String(inv.healthy) }, inv.healthy ? "Healthy" : `Drift: ${inv.drift} units`),
        ` · available ${inv.availableStock} + held ${inv.liveHolds} + sold ${inv.sold} = ${inv.availableStock + inv.liveHolds + inv.sold}`
        + ` of ${inv.totalStock ?? "?"} (PostgreSQL: total ${inv.totalStockPostgres}, sold ${inv.soldPostgres}) · checked ${new Date(inv.checkedAt).toLocaleTimeString()}`),
      inv.problems.length ? h("ul", {}, inv.problems.map((p) => h("li", { class: "drifted" }, p))) : null,
      inv.sizes.length ? h("table", {},
        h("thead", {}, h("tr", {}, ...["Size", "Avail.", "Held", "Sold", "Total", "PG sold", "PG total", "OK"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, inv.sizes.map((s) => h("tr", {}, h("th", { scope: "row" }, s.size),
          ...[s.availableStock, s.liveHolds, s.sold, s.totalStock, s.soldPostgres ?? "–", s.totalStockPostgres ?? "–"].map((v) => h("td", { class: "num" }, String(v))),
          h("td", { class: s.healthy ? "healthy" : "drifted" }, s.healthy ? "yes" : "no"))))) : null);
  }
}

// ---- fairness ------------------------------------------------------------------------

function fairnessPanel(drop) {
  const out = h("div", { id: "fairness-result", role: "status" });
  const body = h("div", { id: "fairness" }, h("p", { class: "quiet" }, "Loading the record…"));
  const load = async () => {
    try {
      const record = await auth.api("GET", `/api/drops/${drop.id}/fairness`);
      fill(body,
        h("p", {}, `Algorithm ${record.algorithm} · ${record.entries} entries ordered`,
          record.orderFixedAt ? ` · order fixed ${when(record.orderFixedAt)}` : " · order not fixed yet"),
        h("p", {}, "Commitment: ", h("code", {}, record.seedCommitment)),
        h("p", {}, "Seed: ", h("code", {}, record.seed || "not revealed yet")),
        h("button", { type: "button", disabled: !record.seed, onclick: async () => {
          try {
            const entries = await auth.api("GET", `/api/drops/${drop.id}/fairness/entries`);
            const result = await verify(record, entries);
            out.dataset.ok = String(result.ok);
            fill(out, h("p", { class: result.ok ? "healthy" : "drifted" },
              result.ok ? `Verified: all ${result.checked} entries are in the published order.` : "The record does not check out."),
              result.problems.length ? h("ul", {}, result.problems.slice(0, 20).map((p) => h("li", {}, p))) : null);
          } catch (error) {
            out.textContent = sentence(error);
          }
        } }, "Verify the order"), out);
    } catch (error) {
      body.replaceChildren(h("p", { class: "quiet" }, sentence(error)));
    }
  };
  load();
  return [h("h3", {}, "Fairness record"), body];
}

// ---- create --------------------------------------------------------------------------

function parseSizes(text) {
  return text.split(",").map((part) => part.trim()).filter(Boolean).map((part) => {
    const at = part.lastIndexOf("=");
    if (at < 1) throw { code: "VALIDATION_ERROR", message: `write each size as label=units ("${part}")` };
    return { size: part.slice(0, at).trim(), totalStock: Number(part.slice(at + 1)) };
  });
}

$("#c-access").addEventListener("change", (event) => {
  $("#queue-settings").hidden = event.target.value !== "queue";
  $("#draw-settings").hidden = event.target.value !== "draw";
});

$("#create").addEventListener("submit", (event) => submit(event, async (f) => {
  const body = {
    name: f.name.value,
    priceCents: Math.round(Number(f.price.value) * 100),
    currency: f.currency.value,
    perUserLimit: Number(f.perUserLimit.value),
  };
  if (f.brand.value) body.brand = f.brand.value;
  const sizes = parseSizes(f.sizes.value);
  if (sizes.length) body.sizes = sizes;
  else body.totalStock = Number(f.totalStock.value);
  if (f.startsAt.value) body.startsAt = new Date(f.startsAt.value).toISOString();
  if (f.endsAt.value) body.endsAt = new Date(f.endsAt.value).toISOString();
  if (f.access.value !== "open") body.access = f.access.value;
  if (f.access.value === "queue") body.queue = { admitPerMinute: Number(f.admitPerMinute.value), passSeconds: Number(f.passSeconds.value) };
  if (f.access.value === "draw") {
    body.draw = { claimSeconds: Number(f.claimSeconds.value) };
    if (f.closesAt.value) body.draw.closesAt = new Date(f.closesAt.value).toISOString();
  }
  const drop = await send("POST", "/api/drops", body);
  state.drops.set(drop.id, drop);
  f.reset();
  select(drop.id);
  return `Created ${drop.name}.`;
}));

// ---- start -----------------------------------------------------------------------------

$("#account-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  try {
    await auth.signIn("login", form.email.value, form.password.value);
    form.password.value = "";
  } catch (error) {
    say(message, sentence(error), "error");
  }
});
$("#signout").addEventListener("click", () => auth.signOut());

let known = auth.user() ? auth.user().id : null;
auth.onChange((session) => {
  const id = session ? session.user.id : null;
  if (id !== known) {
    known = id;
    checkAccess();
  }
});

auth.connectSocket((options) => io(options), {
  connect: () => { $("#live").dataset.on = "1"; $("#live-text").textContent = "Live"; },
  disconnect: () => { $("#live").dataset.on = ""; $("#live-text").textContent = "Reconnecting"; },
  stock_update: ({ dropId, availableStock }) => {
    const drop = state.drops.get(dropId);
    if (!drop) return state.allowed && loadDrops();
    drop.availableStock = availableStock;
    renderList();
  },
});

checkAccess();
setInterval(poll, 1000);
setInterval(() => state.allowed && loadDrops().catch(() => {}), 10000);

// The storefront page's script (served from the API: the page's CSP allows 'self' only).
const state = { token: null, drops: new Map(), holds: new Map() };
const $ = (id) => document.getElementById(id);
const say = (text) => { $("message").textContent = text || ""; };

async function api(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const res = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const data = res.status === 204 ? null : await res.json();
  if (!res.ok) throw new Error(data && data.detail ? `${data.code}: ${data.detail}` : res.statusText);
  return data;
}

function render() {
  const root = $("drops");
  root.innerHTML = "";
  for (const drop of state.drops.values()) {
    const card = document.createElement("div");
    card.className = "drop";
    const price = (drop.priceCents / 100).toFixed(2) + " " + drop.currency;
    card.innerHTML = `<div class="status">${drop.status}</div><h2></h2><div>${price}</div>
      <div class="stock">${drop.availableStock} <small>of ${drop.totalStock} left</small></div>
      <div>${drop.activeReservations} on hold</div>`;
    card.querySelector("h2").textContent = drop.name;
    const hold = state.holds.get(drop.id);
    if (hold) {
      const left = Math.max(0, Math.round((Date.parse(hold.expiresAt) - Date.now()) / 1000));
      const box = document.createElement("div");
      box.className = "hold";
      box.innerHTML = `Held for you: <b>${left}s</b> `;
      const buy = document.createElement("button");
      buy.textContent = "Buy";
      buy.disabled = left <= 0;
      buy.onclick = () => purchase(drop.id, hold.id);
      box.append(buy);
      card.append(box);
    } else {
      const reserve = document.createElement("button");
      reserve.textContent = "Reserve";
      reserve.disabled = !state.token || drop.status !== "live" || drop.availableStock <= 0;
      reserve.onclick = () => reserveDrop(drop.id);
      card.append(reserve);
    }
    root.append(card);
  }
}

async function loadDrops() {
  try {
    for (const drop of await api("GET", "/api/drops")) state.drops.set(drop.id, drop);
    render();
  } catch (err) { say(err.message); }
}

async function reserveDrop(dropId) {
  try {
    state.holds.set(dropId, await api("POST", `/api/drops/${dropId}/reserve`));
    say("");
  } catch (err) { say(err.message); }
  await loadDrops();
}

async function purchase(dropId, reservationId) {
  try {
    await api("POST", `/api/reservations/${reservationId}/purchase`);
    state.holds.delete(dropId);
    say("Purchased. Enjoy the pair.");
  } catch (err) { say(err.message); state.holds.delete(dropId); }
  await loadDrops();
}

$("auth").addEventListener("submit", async (event) => {
  event.preventDefault();
  const mode = event.submitter.dataset.mode;
  try {
    const session = await api("POST", `/api/auth/${mode}`, { email: $("email").value, password: $("password").value });
    state.token = session.accessToken;
    $("who").textContent = session.user.displayName;
    for (const hold of await api("GET", "/api/me/reservations")) state.holds.set(hold.dropId, hold);
    say("");
    render();
  } catch (err) { say(err.message); }
});

if (window.io) {
  const socket = io({ transports: ["websocket", "polling"] });
  socket.on("connect", () => $("dot").classList.add("on"));
  socket.on("disconnect", () => $("dot").classList.remove("on"));
  socket.on("stock_update", ({ dropId, availableStock }) => {
    const drop = state.drops.get(dropId);
    if (!drop) return loadDrops();
    drop.availableStock = availableStock;
    render();
  });
} else {
  setInterval(loadDrops, 2000);
}
setInterval(() => { if (state.holds.size) render(); }, 1000);
loadDrops();

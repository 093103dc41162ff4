// Connect N official socket.io-client 4 clients to a URL and report, as JSON lines on stdout,
// how many connected and received the connect snapshot (one `stock_update` per storefront drop).
//
//   node clients.mjs --url http://127.0.0.1:4000 --count 100 --mode default|polling|websocket \
//        --expect 3 [--timeout 30] [--hold 1] [--keep 30]
//
// Every client uses the library's default options except `transports` in the polling and
// websocket modes, so `default` is what a browser does: a long-polling handshake, then the
// upgrade. A client counts as ok when it connected without a connect_error, received
// `--expect` distinct drops, and did not disconnect during the `--hold` seconds after every
// client finished. With `--keep D`, client 0 then stays connected D more seconds and prints
// each `stock_update` as it arrives ({"event":"stock",...}), so a test can wait on them.
// Lines: {"event":"ready",...} once the crowd is done, {"event":"stock",...}*,
// {"event":"result",...} last.
import { io } from "socket.io-client";

function options(argv) {
  const out = { url: "", count: 1, mode: "default", expect: 1, timeout: 30, hold: 1, keep: 0 };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!(key in out)) throw new Error(`unknown option --${key}`);
    out[key] = typeof out[key] === "number" ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!out.url) throw new Error("--url is required");
  if (!["default", "polling", "websocket"].includes(out.mode)) throw new Error("bad --mode");
  return out;
}

const opts = options(process.argv);
const clientOptions = opts.mode === "default" ? {} : { transports: [opts.mode] };
const emit = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const started = performance.now();
const ms = () => Math.round((performance.now() - started) * 10) / 10;

function track(index) {
  const socket = io(opts.url, clientOptions);
  const state = {
    index, socket, connectedAt: null, snapshotAt: null, drops: new Set(),
    connectErrors: [], disconnects: [], events: [], streaming: false,
  };
  state.snapshot = new Promise((resolve) => { state.resolve = resolve; });
  socket.on("connect", () => { state.connectedAt ??= ms(); });
  socket.on("connect_error", (err) => state.connectErrors.push(String(err?.message ?? err)));
  socket.on("disconnect", (reason) => state.disconnects.push({ at: ms(), reason }));
  socket.on("stock_update", (data) => {
    state.drops.add(data.dropId);
    if (state.drops.size >= opts.expect && state.snapshotAt === null) {
      state.snapshotAt = ms();
      state.resolve();
    }
    if (state.streaming) {
      const event = { at: ms(), dropId: data.dropId, availableStock: data.availableStock };
      state.events.push(event);
      emit({ event: "stock", ...event, transport: socket.io.engine?.transport?.name });
    }
  });
  return state;
}

const timeout = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));
const clients = Array.from({ length: opts.count }, (_, i) => track(i));
await Promise.race([Promise.all(clients.map((c) => c.snapshot)), timeout(opts.timeout)]);
await timeout(opts.hold);

const ok = (c) => c.connectedAt !== null && c.snapshotAt !== null
  && c.connectErrors.length === 0 && c.disconnects.length === 0;
const errors = {};
for (const c of clients) for (const e of c.connectErrors) errors[e] = (errors[e] ?? 0) + 1;
const times = clients.filter((c) => c.snapshotAt !== null).map((c) => c.snapshotAt).sort((a, b) => a - b);
const summary = {
  mode: opts.mode,
  count: opts.count,
  ok: clients.filter(ok).length,
  connected: clients.filter((c) => c.connectedAt !== null).length,
  snapshots: times.length,
  withConnectError: clients.filter((c) => c.connectErrors.length > 0).length,
  disconnected: clients.filter((c) => c.disconnects.length > 0).length,
  errors,
  snapshotMs: { p50: times[Math.floor(times.length / 2)] ?? null, max: times.at(-1) ?? null },
  transports: clients.reduce((acc, c) => {
    const name = c.socket.io.engine?.transport?.name ?? "none";
    acc[name] = (acc[name] ?? 0) + 1;
    return acc;
  }, {}),
};

const kept = opts.keep > 0 && ok(clients[0]) ? clients[0] : null;
for (const c of clients) if (c !== kept) c.socket.disconnect();
emit({ event: "ready", ...summary, kept: kept !== null });
if (kept !== null) {
  kept.streaming = true;
  await timeout(opts.keep);
  summary.keptClient = {
    seconds: opts.keep,
    transport: kept.socket.io.engine?.transport?.name,
    events: kept.events.length,
    disconnects: [...kept.disconnects],
    connectErrors: [...kept.connectErrors],
  };
  kept.socket.disconnect();
}
emit({ event: "result", ...summary });
process.exit(0);

// One official socket.io-client 4 client, signed in or not, reporting what it receives as
// JSON lines on stdout, for the fair-access push tests (tests/e2e/test_access_serve.py).
//
//   node access_client.mjs --url http://127.0.0.1:4000 [--token ACCESS_TOKEN] [--seconds 30]
//
// With --token the client connects with `auth: {token}`; without it, with no auth at all.
// Lines (`at` is Date.now(), milliseconds since the epoch, to compare with server times):
//   {"event":"connect","at":...}
//   {"event":"connect_error","at":...,"message":"...","data":{...}}  (then it exits)
//   {"event":"stock_update","at":...,"dropId":"..."}                   (first one only)
//   {"event":"access_update","at":...,"payload":{...}}
//   {"event":"end","at":...}                                           after --seconds
import { io } from "socket.io-client";

function options(argv) {
  const out = { url: "", token: "", seconds: 30 };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!(key in out)) throw new Error(`unknown option --${key}`);
    out[key] = typeof out[key] === "number" ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!out.url) throw new Error("--url is required");
  return out;
}

const opts = options(process.argv);
const emit = (line) => process.stdout.write(JSON.stringify({ at: Date.now(), ...line }) + "\n");
const socket = io(opts.url, opts.token ? { auth: { token: opts.token } } : {});
let stocks = 0;

socket.on("connect", () => emit({ event: "connect" }));
socket.on("connect_error", (err) => {
  emit({ event: "connect_error", message: String(err?.message ?? err), data: err?.data ?? null });
  socket.disconnect();
  process.exit(0);
});
socket.on("stock_update", (data) => {
  if (stocks++ === 0) emit({ event: "stock_update", dropId: data.dropId });
});
socket.on("access_update", (payload) => emit({ event: "access_update", payload }));

setTimeout(() => {
  emit({ event: "end" });
  socket.disconnect();
  process.exit(0);
}, opts.seconds * 1000);

// hmac-sha256-v1 recomputed in the browser (docs/FAIRNESS.md): the seed's SHA-256 must be
// the commitment published at creation, each entry's rank key HMAC-SHA256(seed, entryId),
// and the positions the entries sorted ascending by rank key. WebCrypto does the hashing.

const hex = (buffer) => [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");

function bytes(hexText) {
  const out = new Uint8Array(hexText.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hexText.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * Checks a fairness record (`record` from /fairness, `entries` from /fairness/entries).
 * Answers {ok, problems: [sentence], checked: number of entries}.
 */
export async function verify(record, entries) {
  const problems = [];
  if (!record.seed || !/^[0-9a-f]{64}$/.test(record.seed)) {
    return { ok: false, problems: ["The seed is not revealed yet."], checked: 0 };
  }
  const seed = bytes(record.seed);
  const commitment = hex(await crypto.subtle.digest("SHA-256", seed));
  if (commitment !== record.seedCommitment) problems.push("The seed does not match its commitment.");
  const key = await crypto.subtle.importKey("raw", seed, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const encoder = new TextEncoder();
  const ranked = [];
  for (const entry of entries) {
    const rank = hex(await crypto.subtle.sign("HMAC", key, encoder.encode(entry.entryId)));
    if (rank !== entry.rankKey) problems.push(`Entry ${entry.entryId}: rank key differs.`);
    ranked.push({ entryId: entry.entryId, rank });
  }
  ranked.sort((a, b) => (a.rank < b.rank ? -1 : a.rank > b.rank ? 1 : 0));
  const byId = new Map(entries.map((e) => [e.entryId, e.position]));
  ranked.forEach((r, i) => {
    if (byId.get(r.entryId) !== i + 1) problems.push(`Entry ${r.entryId}: position ${byId.get(r.entryId)}, recomputed ${i + 1}.`);
  });
  if (record.entries != null && record.entries !== entries.length) {
    problems.push(`The record counts ${record.entries} entries; the list has ${entries.length}.`);
  }
  return { ok: problems.length === 0, problems, checked: entries.length };
}

// Benchmarks of the TypeScript SDK (SDK.md "Speed") beside the same work
// from Rust in the same run (`bench-sdk-baseline`, release, on the same
// data): open + verify of Case A (target ≤ 1.1× Rust), list() of 10,000
// snapshots including the conversion to JS objects (≤ 1.5×), 1,000 get by
// name one after another (≤ 1.5×: sequential latency), and beside it the
// same 1,000 get issued at once with Promise.all (concurrent throughput; no
// target, extra information). It also prints Node's own floor for work kept
// off the JS thread (1,000 `fs.promises.access("/")`: one libuv pool round
// trip each), the bound under the sequential get. Rounds alternate Rust and TS so that both see
// the same machine load.
// Usage: node bench/ts/bench.js --baseline BIN --data DIR [--runs N] [--json FILE]
"use strict";
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");
const m = require("../../sdk-ts");

function flag(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

const runs = Number(flag("--runs", "5"));
const baseline = flag("--baseline");
const data = flag("--data");
const jsonOut = flag("--json");
/** Snapshots in the prepared index, and lookups timed together. */
const INDEXED = 10000;
const GETS = 1000;
/** Timed calls of each measure per round (after one warm-up), as the Rust side. */
const PER_ROUND = 3;
/** The name of the i-th lookup, as on the Rust side. */
const getName = (i) => `snap-${String(i * (INDEXED / GETS)).padStart(5, "0")}`;

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Median of PER_ROUND timed calls of `work` after one untimed call. */
async function timedAfterWarmup(work) {
  await work();
  const times = [];
  for (let i = 0; i < PER_ROUND; i++) {
    const t = process.hrtime.bigint();
    await work();
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return median(times);
}

/** One round of the measures through the TS SDK, in milliseconds. */
async function tsRound() {
  const caseA = path.join(data, "case-a");
  return m.withConfig({ home: path.join(data, "home") }, async () => ({
    verify_case_a_ms: await timedAfterWarmup(async () => {
      const r = await (await m.Snapshot.open(caseA)).verify();
      if (r.upper.kind !== "verified") throw new Error("Case A: integrity not recorded");
    }),
    list_10000_ms: await timedAfterWarmup(async () => {
      const all = await m.Snapshot.list();
      if (all.length !== INDEXED) throw new Error(`listed ${all.length} of ${INDEXED}`);
    }),
    get_1000_ms: await timedAfterWarmup(async () => {
      for (let i = 0; i < GETS; i++) await m.Snapshot.get(getName(i));
    }),
    get_1000_concurrent_ms: await timedAfterWarmup(async () => {
      await Promise.all(Array.from({ length: GETS }, (_, i) => m.Snapshot.get(getName(i))));
    }),
    pool_floor_1000_ms: await timedAfterWarmup(async () => {
      for (let i = 0; i < GETS; i++) await fs.promises.access("/");
    }),
  }));
}

/** The same round from Rust (`bench-sdk-baseline measure`), in its own process. */
function rustRound() {
  const out = execFileSync(baseline, ["measure", "--data", data, "--runs", String(PER_ROUND), "--warmup", "1"], {
    encoding: "utf8",
  });
  return JSON.parse(out.trim());
}

async function main() {
  if (!baseline || !data) throw new Error("--baseline and --data are required");
  fs.mkdirSync(data, { recursive: true });
  execFileSync(baseline, ["prepare", "--data", data], { stdio: ["ignore", 2, "inherit"] });
  const rust = [];
  const ts = [];
  for (let round = 0; round < runs; round++) {
    rust.push(rustRound());
    ts.push(await tsRound());
  }
  const rows = [
    ["open + verify Case A", "verify_case_a_ms", 1.1],
    [`list() of ${INDEXED.toLocaleString("en")} (+ conversion)`, "list_10000_ms", 1.5],
    ["1,000 get by name (sequential)", "get_1000_ms", 1.5],
    ["1,000 get by name (concurrent, no target)", "get_1000_concurrent_ms", null],
  ];
  console.log(`TS SDK beside Rust, same data: ${runs} alternating rounds of ${PER_ROUND} timed calls per measure and side; medians`);
  console.log(`${"what".padEnd(42)} ${"TS".padStart(11)} ${"Rust".padStart(11)} ${"ratio".padStart(7)} target`);
  const med = (side, k) => median(side.map((x) => x[k]));
  const medians = (side) => Object.fromEntries(rows.map(([, k]) => [k, med(side, k)]));
  for (const [what, key, target] of rows) {
    const t = med(ts, key);
    const r = med(rust, key);
    const ratio = t / r;
    const verdict = target === null ? "-" : `${target.toFixed(1)}x ${ratio <= target ? "ok" : "OVER"}`;
    console.log(`${what.padEnd(42)} ${t.toFixed(2).padStart(8)} ms ${r.toFixed(2).padStart(8)} ms ${ratio.toFixed(2).padStart(6)}x ${verdict}`);
  }
  const floor = med(ts, "pool_floor_1000_ms");
  const rustGets = med(rust, "get_1000_ms");
  console.log(
    `for reference, 1,000 fs.promises.access("/") (one libuv pool round trip each): ${floor.toFixed(2)} ms ` +
      `(Node's floor for work kept off the JS thread; ${(floor / rustGets).toFixed(2)}x Rust's gets)`,
  );
  if (jsonOut) {
    fs.writeFileSync(jsonOut, JSON.stringify({ sdk: "TypeScript", sdk_ms: medians(ts), rust_ms: medians(rust) }) + "\n");
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

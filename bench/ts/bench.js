// Benchmarks of the TypeScript SDK (SDK.md "Speed") beside the same work
// from Rust in the same run (`bench-sdk-rust`, release): open + verify of
// Case A (target ≤ 1.1× Rust), list() of 10,000 snapshots including the
// conversion to JS objects (≤ 1.5×), 1,000 get by name (≤ 1.5×).
// Usage: node bench/ts/bench.js --bench-bin DIR [--runs N] [--n N] [--work DIR]
"use strict";
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const m = require("../../sdk-ts");

function flag(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

const runs = Number(flag("--runs", "7"));
const n = Number(flag("--n", "10000"));
const bin = path.join(flag("--bench-bin", path.join(__dirname, "..", "..", "target", "release")), "bench-sdk-rust");
const work = flag("--work", fs.mkdtempSync(path.join(os.tmpdir(), "msb-bench-ts-")));
const keep = process.argv.includes("--work");

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function timeIt(f) {
  const t = process.hrtime.bigint();
  await f();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

/** The TS side: `verifyRuns` open + verify of Case A, `indexRuns` list() and min(indexRuns, 5) × 1,000 get. */
async function measureTs(verifyRuns, indexRuns) {
  const caseA = path.join(work, "case-a");
  return m.withConfig({ home: path.join(work, "home") }, async () => {
    const verify = [];
    for (let i = 0; i < verifyRuns; i++) {
      verify.push(
        await timeIt(async () => {
          const snap = await m.Snapshot.open(caseA);
          const r = await snap.verify();
          if (r.upper.kind !== "verified") throw new Error("Case A: integrity not recorded");
        }),
      );
    }
    const list = [];
    for (let i = 0; i < indexRuns; i++) {
      list.push(
        await timeIt(async () => {
          const all = await m.Snapshot.list();
          if (all.length !== n) throw new Error(`listed ${all.length} of ${n}`);
        }),
      );
    }
    const gets = [];
    for (let r = 0; r < Math.min(indexRuns, 5); r++) {
      gets.push(
        await timeIt(async () => {
          for (let k = 0; k < 1000; k++) await m.Snapshot.get(`snap-${String((k * 7919) % n).padStart(5, "0")}`);
        }),
      );
    }
    const med = (xs) => (xs.length ? median(xs) : null);
    return { verify_ms: med(verify), list_ms: med(list), get1000_ms: med(gets) };
  });
}

/** The same from Rust (`bench-sdk-rust measure`), one process per call. */
function measureRust(runs, only) {
  return JSON.parse(execFileSync(bin, ["measure", work, String(n), String(runs), only], { encoding: "utf8" }).trim());
}

async function main() {
  if (!fs.existsSync(path.join(work, "home"))) {
    process.stderr.write(`preparing Case A and ${n} artifacts in ${work}\n`);
    execFileSync(bin, ["prepare", work, String(n)], { stdio: ["ignore", "ignore", "inherit"] });
  }
  // Warm both (page cache, index), then alternate Rust and TS so that the
  // load of the (shared) machine falls on both alike: Case A one verify at
  // a time, the index in rounds of `runs`. Medians of each side.
  measureRust(1, "verify");
  await measureTs(1, 1);
  const rust = { verify_ms: [], list_ms: [], get1000_ms: [] };
  const ts = { verify_ms: [], list_ms: [], get1000_ms: [] };
  for (let i = 0; i < runs; i++) {
    rust.verify_ms.push(measureRust(1, "verify").verify_ms);
    ts.verify_ms.push((await measureTs(1, 0)).verify_ms);
  }
  for (let i = 0; i < 3; i++) {
    const r = measureRust(runs, "index");
    const t = await measureTs(0, runs);
    for (const k of ["list_ms", "get1000_ms"]) {
      rust[k].push(r[k]);
      ts[k].push(t[k]);
    }
  }
  const pick = (side, k) => median(side[k]);
  const rows = [
    ["open + verify Case A (sparse-sha256)", "verify_ms", 1.1],
    [`list() of ${n} snapshots + conversion`, "list_ms", 1.5],
    ["1,000 get by name", "get1000_ms", 1.5],
  ];
  console.log(`${"what".padEnd(44)} ${"Rust".padStart(10)} ${"TS".padStart(10)} ${"TS÷Rust".padStart(8)} target`);
  let ok = true;
  for (const [what, key, target] of rows) {
    const r = pick(rust, key);
    const t = pick(ts, key);
    const ratio = t / r;
    ok &&= ratio <= target;
    console.log(`${what.padEnd(44)} ${r.toFixed(1).padStart(7)} ms ${t.toFixed(1).padStart(7)} ms ${ratio.toFixed(2).padStart(7)}x ≤ ${target}x ${ratio <= target ? "ok" : "MISSED"}`);
  }
  console.log(`(medians: ${runs} alternating verifies each; list and get in 3 alternating rounds of ${runs} and min(${runs},5) runs)`);
  if (!keep) fs.rmSync(work, { recursive: true, force: true });
  if (!ok) process.exitCode = 1;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

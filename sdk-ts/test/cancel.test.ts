/**
 * Cancellation through AbortSignal: aborting the verify of Case A (4 GiB
 * sparse ext4, `msb-sparse-sha256-v1`) mid-way rejects within 100 ms with an
 * AbortError-style `CancelledError` and leaves nothing behind; an aborted
 * export leaves no archive; an already-aborted signal rejects at once.
 */

import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as m from "microsandbox";
import { inHome, makeCaseA, tree } from "./helpers";

test("aborting a long verify of Case A rejects within 100 ms and leaves nothing behind", async () => {
  await inHome(async (home) => {
    const dir = path.join(home.snapshotsDir, "case-a");
    makeCaseA(dir);
    const snap = await m.Snapshot.open(dir);
    const before = tree(home.path);
    // The whole verify takes a few seconds: check it completes first.
    const full = Date.now();
    const report = await snap.verify();
    const fullMs = Date.now() - full;
    assert.equal(report.upper.kind, "verified");
    const controller = new AbortController();
    let events = 0;
    const started = Date.now();
    const call = snap.verify({ signal: controller.signal, onProgress: () => events++ });
    await new Promise((r) => setTimeout(r, Math.min(300, fullMs / 3)));
    const aborted = Date.now();
    controller.abort();
    const err = await call.then(
      () => assert.fail(`verify finished before the abort (full verify: ${fullMs} ms)`),
      (e: unknown) => e,
    );
    const latency = Date.now() - aborted;
    assert.ok(err instanceof m.CancelledError, `got ${String(err)}`);
    assert.equal((err as Error).name, "AbortError");
    assert.equal((err as m.MicrosandboxError).code, "Cancelled");
    assert.ok(latency <= 100, `rejected ${latency} ms after the abort`);
    assert.ok(aborted - started < fullMs, "aborted mid-way");
    assert.deepEqual(tree(home.path), before, "the verify left something behind");
    // The artifact is untouched and still verifies.
    assert.equal((await snap.verify()).upper.kind, "verified");
  });
});

test("an aborted export leaves no archive and no staging behind", async () => {
  await inHome(async (home) => {
    makeCaseA(path.join(home.snapshotsDir, "case-a"));
    const out = path.join(home.path, "out");
    fs.mkdirSync(out);
    await m.Snapshot.reindex(); // the index database exists before, as in any used home
    const before = tree(home.path);
    const controller = new AbortController();
    const call = m.Snapshot.export("case-a", path.join(out, "a.tar.zst"), { signal: controller.signal });
    setTimeout(() => controller.abort(), 200);
    await assert.rejects(call, m.CancelledError);
    assert.deepEqual(tree(home.path), before);
  });
});

test("an already-aborted signal rejects at once", async () => {
  await inHome(async (home) => {
    const signal = AbortSignal.abort();
    await assert.rejects(m.Snapshot.export("x", path.join(home.path, "x.tar"), { signal }), m.CancelledError);
    await assert.rejects(m.Sandbox.builder("never").image("none").create({ signal }), m.CancelledError);
    await assert.rejects(m.Snapshot.builder("never").name("n").create({ signal }), m.CancelledError);
    assert.deepEqual(tree(home.path), []);
  });
});

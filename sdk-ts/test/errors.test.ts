/**
 * Errors: every kind of the core's KINDS list (read from the native
 * library at run time) reaches JS as its own subclass with `.code` equal to
 * the kind, through the same conversion as real errors; panics become
 * `Runtime`; lossy BigInt input is refused; real failures carry their kind.
 */

import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as m from "microsandbox";
import { inHome, makeArtifact } from "./helpers";

test("every kind of the core's KINDS list maps to its own subclass", async () => {
  const kinds = m.kinds();
  assert.ok(kinds.length >= 16, `the core lists ${kinds.length} kinds`);
  const seen = new Set<Function>();
  for (const kind of kinds) {
    const err = await m.testHooks.error(kind).then(
      () => assert.fail(`no error for ${kind}`),
      (e: unknown) => e,
    );
    assert.ok(err instanceof m.MicrosandboxError, `${kind}: not a MicrosandboxError`);
    assert.equal(err.code, kind);
    const cls = (m as unknown as Record<string, Function>)[`${kind}Error`];
    assert.ok(cls, `no exported ${kind}Error class`);
    assert.equal(err.constructor, cls, `${kind}: wrong subclass ${err.constructor.name}`);
    assert.ok(!seen.has(cls), `${kind}: class shared with another kind`);
    seen.add(cls);
    assert.ok(err.message.length > 0);
  }
});

test("the cancelled kind is AbortError-style", async () => {
  const err = await m.testHooks.error("Cancelled").catch((e: unknown) => e);
  assert.ok(err instanceof m.CancelledError);
  assert.equal((err as Error).name, "AbortError");
});

test("a panic in the native code becomes a RuntimeError", async () => {
  const err = await m.testHooks.panic().catch((e: unknown) => e);
  assert.ok(err instanceof m.RuntimeError);
  assert.match((err as Error).message, /panic/);
  // The addon still works afterwards.
  assert.equal(await m.testHooks.u64(7n), 7n);
});

test("u64 travels exactly as BigInt both ways; lossy input is refused", async () => {
  for (const v of [0n, 2n ** 53n + 1n, 2n ** 63n + 12345n, 2n ** 64n - 1n]) {
    assert.equal(await m.testHooks.u64(v), v);
  }
  for (const bad of [-1n, 2n ** 64n, 2n ** 70n]) {
    await assert.rejects(m.testHooks.u64(bad), m.InvalidConfigError);
  }
  assert.throws(() => m.Sandbox.builder("x").upperSizeBytes(2 ** 53 + 2), m.InvalidConfigError);
});

test("real failures carry their kind", async () => {
  await inHome(async (home) => {
    await assert.rejects(m.Snapshot.open("missing"), m.SnapshotNotFoundError);
    await assert.rejects(m.Snapshot.get("missing"), m.SnapshotNotFoundError);
    await assert.rejects(m.Sandbox.get("missing"), m.SandboxNotFoundError);
    await assert.rejects(m.Image.get("missing:latest"), m.ImageNotFoundError);
    await assert.rejects(m.Snapshot.builder("sb").create(), m.InvalidConfigError);
    const dir = path.join(home.snapshotsDir, "broken");
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, "manifest.json"), "{not json");
    await assert.rejects(m.Snapshot.open(dir), m.ManifestInvalidError);
    const archive = path.join(home.path, "bad.tar");
    fs.writeFileSync(archive, "not an archive at all");
    await assert.rejects(m.Snapshot.import(archive), m.ArchiveInvalidError);
    makeArtifact(path.join(home.snapshotsDir, "exists"), 1n << 20n);
    await assert.rejects(m.withConfig({ accel: "bogus" as "kvm" }, () => m.Snapshot.list()), m.InvalidConfigError);
  });
});

test("handles from Snapshot.list() are read-only", async () => {
  await inHome(async (home) => {
    makeArtifact(path.join(home.snapshotsDir, "one"), 1n << 20n);
    assert.equal(await m.Snapshot.reindex(), 1);
    const [h] = await m.Snapshot.list();
    assert.ok(h && h.readOnly);
    await assert.rejects(h.open(), (e: unknown) => e instanceof m.ReadOnlyHandleError && /Snapshot\.get\(\)/.test((e as Error).message));
    await assert.rejects(h.remove(), m.ReadOnlyHandleError);
    const live = await m.Snapshot.get("one");
    assert.equal(live.readOnly, false);
    assert.equal((await live.open()).digest, h.digest);
  });
});

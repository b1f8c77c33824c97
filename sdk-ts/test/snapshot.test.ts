/**
 * Snapshot entry points on artifacts made here: list of 10,000 handles
 * whole, get/open/remove, listDir, labels, bigint sizes exact at 2^53-1
 * (the manifest maximum) and refused above, progress of verify, export and
 * import, and per-scope configuration.
 */

import { test } from "node:test";
import * as assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import * as m from "microsandbox";
import { TestHome, inHome, makeArtifact, manifestJson, tree } from "./helpers";

function makeMany(dir: string, n: number): void {
  const base = Date.parse("2026-01-01T00:00:00Z");
  for (let i = 0; i < n; i++) {
    const art = path.join(dir, `snap-${String(i).padStart(5, "0")}`);
    fs.mkdirSync(art, { recursive: true });
    const upper = path.join(art, "upper.ext4");
    fs.writeFileSync(upper, "");
    fs.truncateSync(upper, 1 << 20);
    const createdAt = new Date(base + i * 1000).toISOString().replace(".000Z", "Z");
    fs.writeFileSync(path.join(art, "manifest.json"), manifestJson({ size: 1n << 20n, createdAt, labels: { i: String(i) } }));
  }
}

test("list() of 10,000 snapshots comes back whole", async () => {
  await inHome(async (home) => {
    makeMany(home.snapshotsDir, 10_000);
    assert.equal(await m.Snapshot.reindex(), 10_000);
    const list = await m.Snapshot.list();
    assert.equal(list.length, 10_000);
    assert.equal(new Set(list.map((h) => h.digest)).size, 10_000);
    // Newest first.
    assert.equal(list[0]!.name, "snap-09999");
    assert.equal(list[9999]!.name, "snap-00000");
    assert.ok(list[0]!.createdAt instanceof Date);
    assert.equal(list[0]!.createdAt.toISOString(), "2026-01-01T02:46:39.000Z");
    assert.equal(list[0]!.sizeBytes, 1n << 20n);
    const h = await m.Snapshot.get("snap-04242");
    assert.equal(h.name, "snap-04242");
    assert.equal(h.path, path.join(home.snapshotsDir, "snap-04242"));
    assert.equal(h.format, "raw");
    assert.equal(h.parentDigest, null);
    const dir = await m.Snapshot.listDir(home.snapshotsDir);
    assert.equal(dir.length, 10_000);
  });
});

test("accessors, labels sorted, open by name/digest/path, remove", async () => {
  await inHome(async (home) => {
    const dir = path.join(home.snapshotsDir, "labelled");
    makeArtifact(dir, 4n << 20n, { labels: { zeta: "1", alpha: "2", mid: "3" } });
    const snap = await m.Snapshot.open("labelled");
    assert.deepEqual(snap.labels, [["alpha", "2"], ["mid", "3"], ["zeta", "1"]]);
    assert.equal(snap.path, dir);
    assert.match(snap.digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(snap.sizeBytes, 4n << 20n);
    assert.equal(snap.format, "raw");
    assert.equal(snap.fstype, "ext4");
    assert.equal(snap.parent, null);
    assert.equal(snap.sourceSandbox, "api");
    assert.equal(snap.createdAt, "2026-11-20T10:00:00Z");
    assert.equal((await m.Snapshot.open(dir)).digest, snap.digest);
    const report = await snap.verify();
    assert.equal(report.upper.kind, "notRecorded");
    assert.equal(report.digest, snap.digest);
    await m.Snapshot.reindex();
    assert.equal((await m.Snapshot.open(snap.digest)).path, dir);
    const h = await m.Snapshot.get(snap.digest);
    assert.equal(h.name, "labelled");
    await h.remove({ force: false });
    assert.equal(fs.existsSync(dir), false);
    await assert.rejects(m.Snapshot.get("labelled"), m.SnapshotNotFoundError);
    makeArtifact(dir, 1n << 20n);
    await m.Snapshot.reindex();
    await m.Snapshot.remove("labelled", { force: true });
    assert.equal((await m.Snapshot.list()).length, 0);
  });
});

test("sizeBytes is an exact bigint at 2^53-1 and a size above 2^53 is refused, not rounded", async () => {
  const home = new TestHome();
  // tmpfs takes sparse files of any size (ext4 stops at 16 TiB).
  const shm = fs.mkdtempSync("/dev/shm/msb-ts-");
  try {
    await m.withConfig(home.config, async () => {
      const max = 2n ** 53n - 1n;
      const big = path.join(shm, "max");
      makeArtifact(big, max);
      const snap = await m.Snapshot.open(big);
      assert.equal(typeof snap.sizeBytes, "bigint");
      assert.equal(snap.sizeBytes, max);
      assert.equal(await m.Snapshot.reindex(shm), 1);
      const [h] = await m.Snapshot.list();
      assert.equal(h!.sizeBytes, max);
      assert.equal((await m.Snapshot.listDir(shm))[0]!.sizeBytes, max);
      const above = path.join(shm, "above");
      fs.mkdirSync(above);
      execFileSync("truncate", ["-s", (2n ** 53n + 1n).toString(), path.join(above, "upper.ext4")]);
      fs.writeFileSync(path.join(above, "manifest.json"), manifestJson({ size: 2n ** 53n + 1n }));
      assert.match(fs.readFileSync(path.join(above, "manifest.json"), "utf8"), /"size_bytes":9007199254740993/);
      await assert.rejects(m.Snapshot.open(above), (e: unknown) => e instanceof m.ManifestInvalidError && /9007199254740993/.test((e as Error).message));
    });
  } finally {
    fs.rmSync(shm, { recursive: true, force: true });
    home.cleanup();
  }
});

test("progress of verify, export and import arrives in order and ends at the total", async () => {
  const home = new TestHome();
  const other = new TestHome();
  try {
    const archive = path.join(home.path, "out", "one.tar.zst");
    await m.withConfig(home.config, async () => {
      const data = Buffer.alloc(24 << 20);
      for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
      makeArtifact(path.join(home.snapshotsDir, "one"), 64n << 20n, { data, algorithm: "msb-sparse-sha256-v1" });
      const snap = await m.Snapshot.open("one");
      const check = (events: m.ProgressEvent[], phase: string) => {
        assert.ok(events.length >= 2, `${phase}: ${events.length} events`);
        for (const [i, e] of events.entries()) {
          assert.equal(e.phase, phase);
          assert.equal(typeof e.doneBytes, "bigint");
          if (i > 0) assert.ok(e.doneBytes >= events[i - 1]!.doneBytes, `${phase}: out of order`);
        }
        const last = events[events.length - 1]!;
        assert.equal(last.doneBytes, last.totalBytes);
      };
      const verifyEvents: m.ProgressEvent[] = [];
      const report = await snap.verify({ onProgress: (e) => verifyEvents.push(e) });
      assert.equal(report.upper.kind, "verified");
      if (report.upper.kind === "verified") assert.equal(report.upper.algorithm, "msb-sparse-sha256-v1");
      check(verifyEvents, "hash");
      const exportEvents: m.ProgressEvent[] = [];
      await m.Snapshot.export("one", archive, { onProgress: (e) => exportEvents.push(e) });
      check(exportEvents, "export");
      assert.ok(fs.statSync(archive).size > 0);
    });
    await m.withConfig(other.config, async () => {
      const importEvents: m.ProgressEvent[] = [];
      const h = await m.Snapshot.import(archive, undefined, { onProgress: (e) => importEvents.push(e) });
      check2(importEvents);
      assert.equal(h.name, "one");
      assert.equal((await h.open()).sizeBytes, 64n << 20n);
    });
    function check2(events: m.ProgressEvent[]) {
      assert.ok(events.length >= 2);
      assert.equal(events[events.length - 1]!.doneBytes, events[events.length - 1]!.totalBytes);
      assert.ok(events.every((e) => e.phase === "import"));
    }
  } finally {
    home.cleanup();
    other.cleanup();
  }
});

test("configuration: concurrent scopes see their own homes; handles keep theirs", async () => {
  const a = new TestHome();
  const b = new TestHome();
  try {
    makeArtifact(path.join(a.snapshotsDir, "in-a"), 1n << 20n);
    makeArtifact(path.join(b.snapshotsDir, "in-b"), 1n << 20n);
    const names = async (h: TestHome) =>
      m.withConfig(h.config, async () => {
        await m.Snapshot.reindex();
        const out: string[] = [];
        for (let i = 0; i < 20; i++) {
          out.push(...(await m.Snapshot.list()).map((x) => x.name ?? ""));
          await new Promise((r) => setImmediate(r));
        }
        return [...new Set(out)];
      });
    const [na, nb] = await Promise.all([names(a), names(b)]);
    assert.deepEqual(na, ["in-a"]);
    assert.deepEqual(nb, ["in-b"]);
    const handle = await m.withConfig(a.config, () => m.Snapshot.get("in-a"));
    // Outside the scope the process default (an unusable home) is in force,
    // but the handle remembers the home it came from.
    await assert.rejects(m.Snapshot.list());
    assert.equal((await handle.open()).digest, (await m.withConfig(a.config, () => m.Snapshot.open("in-a"))).digest);
    m.configure({ home: b.path });
    try {
      assert.deepEqual((await m.Snapshot.list()).map((x) => x.name), ["in-b"]);
      assert.equal(m.currentConfig().home, b.path);
      await m.withConfig({ home: a.path }, async () => {
        assert.equal(m.currentConfig().home, a.path);
        assert.deepEqual((await m.Snapshot.list()).map((x) => x.name), ["in-a"]);
      });
    } finally {
      m.configure({ home: "/proc/self/msb-test-call-outside-a-test-home" });
    }
    assert.ok(tree(a.path).includes("snapshots/in-a/manifest.json"));
  } finally {
    a.cleanup();
    b.cleanup();
  }
});

test("a progress callback does not keep the process alive after its call", async () => {
  const home = new TestHome();
  try {
    const data = Buffer.alloc(16 << 20, 7);
    const dir = path.join(home.snapshotsDir, "alive");
    makeArtifact(dir, 64n << 20n, { data, algorithm: "msb-sparse-sha256-v1" });
    // A child that verifies with a progress callback and then has nothing
    // left to do: it must exit on its own (a strong threadsafe function
    // would hold its event loop open until the timeout kills it).
    const script = `
      const m = require(${JSON.stringify(require.resolve("microsandbox"))});
      m.configure({ home: ${JSON.stringify(home.path)} });
      let events = 0;
      m.Snapshot.open(${JSON.stringify(dir)})
        .then((s) => s.verify({ onProgress: () => { events++; } }))
        .then((r) => console.log(JSON.stringify({ kind: r.upper.kind, events })));`;
    const started = Date.now();
    const out = execFileSync(process.execPath, ["-e", script], { timeout: 20_000, encoding: "utf8" });
    const result = JSON.parse(out.trim()) as { kind: string; events: number };
    assert.equal(result.kind, "verified");
    assert.ok(result.events >= 2, `${result.events} events`);
    assert.ok(Date.now() - started < 20_000);
  } finally {
    home.cleanup();
  }
});

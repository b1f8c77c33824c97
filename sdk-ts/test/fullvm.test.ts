/**
 * Full-VM snapshots on real VMs (`docs/full-snapshots.md`): a sandbox that
 * counts in memory is captured whole (paused), resumed, and forked twice;
 * each fork continues from the captured count with its own disk, entropy,
 * hostname and clock; saveNamed/get/list/delete and restore from a handle;
 * restoreWith's overrides and their limits; and the bad inputs (a stopped
 * sandbox, resume of a running one, a tampered RAM file, aborted calls).
 * One source sandbox and a few forks in one home; every VM is removed.
 */

import { after, before, describe, test } from "node:test";
import * as assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import * as m from "microsandbox";
import { BUSYBOX_REF, TestHome } from "./helpers";

// Starts a loop that counts in a shell variable (never on disk) and prints
// the count into a FIFO on SIGUSR1.
const START_COUNTER = String.raw`mkfifo /tmp/count.fifo; setsid sh -c 'n=0; trap "echo \$n > /tmp/count.fifo" USR1; while :; do n=$((n+1)); sleep 0.1; done' </dev/null >/dev/null 2>&1 & echo $! > /tmp/count.pid`;
const READ_COUNTER = "kill -USR1 $(cat /tmp/count.pid); cat /tmp/count.fifo";

async function sh(sb: m.SandboxHandle, script: string): Promise<string> {
  const out = await sb.exec("sh", ["-c", script]);
  assert.equal(out.exitCode, 0, `${script}: ${out.stderrText}`);
  return out.stdoutText.trim();
}

async function count(sb: m.SandboxHandle): Promise<number> {
  const n = Number(await sh(sb, READ_COUNTER));
  assert.ok(Number.isInteger(n), "counter read");
  return n;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("full-VM snapshots", () => {
  const home = new TestHome();
  let source: m.Sandbox;
  let snap: m.Snapshot;
  let c0 = 0;

  const inHome = <R>(work: () => Promise<R>): Promise<R> => m.withConfig(home.config, work);
  const names = async () => (await m.Sandbox.list()).map((s) => s.name);

  before(async () => {
    assert.ok(process.env.MSB_KERNEL_DIR, "MSB_KERNEL_DIR is not set: run the suite with `make test-ts`");
    await inHome(async () => {
      const archive = path.join(home.path, "busybox.tar");
      await m.Image.buildBusybox(archive, { reference: BUSYBOX_REF });
      await m.Image.load(archive);
      // Cold boot (the instant opt-out); the tests do not depend on how it booted.
      source = await m.Sandbox.builder("counter").image(BUSYBOX_REF).instant(false).create();
      await sh(source, START_COUNTER);
    });
  });

  after(async () => {
    await inHome(async () => {
      for (const sb of await m.Sandbox.list().catch(() => [])) await sb.remove().catch(() => {});
    });
    assert.deepEqual(home.cleanup(), [], "QEMU processes outlived the test");
  });

  test("capture, resume, and two forks that continue from the captured count", async () => {
    await inHome(async () => {
      await sleep(500);
      c0 = await count(source);
      assert.ok(c0 > 0, `c0 = ${c0}`);
      snap = await source.snapshot();
      assert.equal(snap.kind, "full");
      assert.equal(snap.sourceSandbox, "counter");
      assert.equal(snap.vm?.machine.memoryMib, 256);
      assert.equal(snap.vm?.ram.sizeBytes, 256n << 20n);
      const view = JSON.parse(JSON.stringify(snap)) as { kind: string; vm: { ram: { sizeBytes: string }; machine: { cpus: number } } };
      assert.equal(view.kind, "full");
      assert.equal(view.vm.ram.sizeBytes, String(256 << 20));
      assert.equal(view.vm.machine.cpus, 1);
      const digest = snap.digest;
      assert.equal(await source.status(), "paused");
      assert.equal((await m.Sandbox.get("counter")).state, "paused");
      await assert.rejects(source.exec("true"), m.SandboxNotRunningError);

      await source.resume();
      assert.equal(await source.status(), "running");
      await sleep(300);
      assert.ok((await count(source)) > c0, "the original keeps counting");

      const forks: m.Sandbox[] = [];
      const first: number[] = [];
      for (const name of ["fork-a", "fork-b"]) {
        const fork = await snap.restore(name);
        assert.equal(fork.name, name);
        first.push(await count(fork));
        forks.push(fork);
      }
      for (const r of first) assert.ok(c0 <= r && r < c0 + 30, `first read ${r}, captured ${c0}`);
      await sleep(300);
      for (const [i, fork] of forks.entries()) {
        assert.ok((await count(fork)) > first[i]!, `${fork.name} keeps counting`);
      }

      const [a, b] = forks as [m.Sandbox, m.Sandbox];
      await sh(a, "echo only-a > /root/mine.txt");
      assert.equal(await sh(a, "cat /root/mine.txt"), "only-a");
      assert.equal(await sh(b, "test -e /root/mine.txt && echo present || echo absent"), "absent");
      const random = "head -c 16 /dev/urandom | od -An -tx1";
      assert.notEqual(await sh(a, random), await sh(b, random));
      for (const fork of forks) {
        assert.equal(await sh(fork, "hostname"), fork.name);
        const guest = Number(await sh(fork, "date +%s"));
        assert.ok(Math.abs(guest - Date.now() / 1000) <= 5, `guest clock ${guest}`);
      }

      const report = await snap.verify();
      assert.equal(report.digest, digest);
      assert.equal(report.upper.kind, "verified");
      assert.equal((await m.Snapshot.open(snap.path)).digest, digest);
      for (const fork of forks) await fork.remove();
    });
  });

  test("saveNamed, get, list, restore from the handle, delete", async () => {
    await inHome(async () => {
      await snap.saveNamed("kept");
      await assert.rejects(snap.saveNamed("kept"), m.SnapshotAlreadyExistsError);
      const h = await m.Snapshot.get("kept");
      assert.equal(h.kind, "full");
      assert.equal(h.digest, snap.digest);
      const row = (await m.Snapshot.list()).find((r) => r.name === "kept");
      assert.equal(row?.kind, "full");
      assert.equal((row?.toJSON() as { kind?: string }).kind, "full");
      await assert.rejects(row!.restore("from-row"), m.ReadOnlyHandleError);

      const fork = await h.restore("from-handle");
      assert.ok((await count(fork)) >= c0);
      await fork.remove();

      await m.Snapshot.delete("kept");
      await assert.rejects(m.Snapshot.get("kept"), m.SnapshotNotFoundError);
      assert.equal((await m.Snapshot.list()).find((r) => r.name === "kept"), undefined);
    });
  });

  test("restoreWith: env and less memory apply; more memory or CPUs are refused", async () => {
    await inHome(async () => {
      const fork = await snap.restoreWith("small", (b) => b.memoryMib(128).cpus(1).env("FORK_VAR", "from-restore"));
      assert.match(await sh(fork, "env"), /^FORK_VAR=from-restore$/m);
      // The core waits for the balloon; a loaded host may still be finishing.
      let memTotal = 0;
      for (const deadline = Date.now() + 20_000; ; ) {
        memTotal = Number(/MemTotal:\s+(\d+) kB/.exec(await sh(fork, "grep MemTotal /proc/meminfo"))?.[1]);
        if ((memTotal > 0 && memTotal < 140000) || Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.ok(memTotal > 0 && memTotal < 140000, `MemTotal ${memTotal} kB`);

      await assert.rejects(snap.restoreWith("too-big", (b) => b.memoryMib(512)), m.InvalidConfigError);
      await assert.rejects(snap.restoreWith("too-many", (b) => b.cpus(2)), m.InvalidConfigError);
      assert.deepEqual((await names()).sort(), ["counter", "small"]);

      // Bad inputs on real sandboxes: a stopped one cannot be captured whole,
      // a running one cannot be resumed.
      await fork.stop();
      await assert.rejects(fork.snapshot(), m.SandboxNotRunningError);
      await assert.rejects(source.resume(), m.SandboxNotPausedError);
      await fork.remove();
    });
  });

  test("a tampered vm.ram never restores and leaves no sandbox", async () => {
    await inHome(async () => {
      const copy = path.join(home.path, "tampered");
      execFileSync("cp", ["-a", "--sparse=always", snap.path, copy]);
      const ram = path.join(copy, "vm.ram");
      const fd = fs.openSync(ram, "r+");
      try {
        // The first non-zero byte holds data (holes read as zeros).
        const buf = Buffer.alloc(1 << 20);
        let offset = -1;
        for (let pos = 0; offset < 0; pos += buf.length) {
          const n = fs.readSync(fd, buf, 0, buf.length, pos);
          assert.ok(n > 0, "vm.ram holds no data");
          const i = buf.subarray(0, n).findIndex((x) => x !== 0);
          if (i >= 0) offset = pos + i;
        }
        fs.writeSync(fd, Buffer.from([buf[offset % buf.length]! ^ 0xff]), 0, 1, offset);
      } finally {
        fs.closeSync(fd);
      }
      const tampered = await m.Snapshot.open(copy);
      await assert.rejects(tampered.verify(), m.SnapshotIntegrityError);
      await assert.rejects(tampered.restore("from-tampered"), m.SnapshotIntegrityError);
      await assert.rejects(m.Sandbox.get("from-tampered"), m.SandboxNotFoundError);
    });
  });

  test("an aborted capture or restore rejects with CancelledError and changes nothing", async () => {
    await inHome(async () => {
      const aborted = AbortSignal.abort();
      await assert.rejects(source.snapshot({ signal: aborted }), m.CancelledError);
      assert.equal(await source.status(), "running");
      await assert.rejects(snap.restore("never", { signal: aborted }), m.CancelledError);
      await assert.rejects(snap.restoreWith("never", (b) => b.cpus(1), { signal: aborted }), m.CancelledError);
      // Aborted while running: the capture resumes the sandbox, the restore
      // kills the half-started VM and removes the sandbox.
      const abortSoon = () => {
        const c = new AbortController();
        setTimeout(() => c.abort(), 20);
        return { signal: c.signal };
      };
      const artifacts = () => fs.readdirSync(path.join(source.path, "snapshots")).sort();
      const kept = artifacts();
      await assert.rejects(source.snapshot(abortSoon()), m.CancelledError);
      assert.equal(await source.status(), "running");
      assert.deepEqual(artifacts(), kept, "an aborted capture left an artifact");
      await assert.rejects(snap.restore("aborted", abortSoon()), m.CancelledError);
      assert.deepEqual(await names(), ["counter"]);
      assert.ok((await count(source)) > c0, "the source still counts");
    });
  });
});

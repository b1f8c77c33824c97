/**
 * Real VMs (QEMU): the typical flow of the reference end to end — create a
 * sandbox from the busybox image, write a file, stop, snapshot with
 * integrity, verify, export with the image, import into a second home, boot
 * from it, read the file — plus streaming exec (iterator, stdin, Node
 * streams, kill, wait), errors a VM triggers, and an aborted boot. Every VM
 * is removed by the test, even on failure.
 */

import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as path from "node:path";
import * as m from "microsandbox";
import { BUSYBOX_REF, TestHome, vmPids } from "./helpers";

async function loadBusybox(home: TestHome): Promise<void> {
  assert.ok(process.env.MSB_KERNEL_DIR, "MSB_KERNEL_DIR is not set: run the suite with `make test-ts`");
  const archive = path.join(home.path, "busybox.tar");
  await m.Image.buildBusybox(archive, { reference: BUSYBOX_REF });
  const events: m.ProgressEvent[] = [];
  const info = await m.Image.load(archive, undefined, { onProgress: (e) => events.push(e) });
  assert.equal(info.reference, BUSYBOX_REF);
  // The load's progress: phase "load", in order, the last event at the total.
  assert.ok(events.length >= 2, `${events.length} progress events`);
  assert.ok(events.every((e) => e.phase === "load"));
  assert.ok(events.every((e, i) => i === 0 || e.doneBytes >= events[i - 1]!.doneBytes));
  const last = events[events.length - 1]!;
  assert.ok(last.totalBytes > 0n && last.doneBytes === last.totalBytes);
  assert.match(info.manifestDigest, /^sha256:/);
  assert.deepEqual((await m.Image.list()).map((i) => i.reference), [BUSYBOX_REF]);
  assert.equal((await m.Image.get(BUSYBOX_REF)).manifestDigest, info.manifestDigest);
}

/** Run `body` with two homes; remove their sandboxes and VMs afterwards. */
async function withHomes(body: (a: TestHome, b: TestHome) => Promise<void>): Promise<void> {
  const a = new TestHome();
  const b = new TestHome();
  try {
    await body(a, b);
  } finally {
    for (const h of [a, b]) {
      await m.withConfig(h.config, async () => {
        for (const sb of await m.Sandbox.list().catch(() => [])) await sb.remove().catch(() => {});
      });
    }
    const leftovers = [...a.cleanup(), ...b.cleanup()];
    assert.deepEqual(leftovers, [], "QEMU processes outlived the test");
  }
}

test("the typical flow end to end on real VMs", async () => {
  await withHomes(async (home, second) => {
    const archive = path.join(home.path, "baseline.tar.zst");
    await m.withConfig(home.config, async () => {
      await loadBusybox(home);
      const sb = await m.Sandbox.builder("baseline").image(BUSYBOX_REF).memoryMib(256).env("GREETING", "hi").create();
      assert.equal(sb.name, "baseline");
      assert.equal(await sb.status(), "running");
      const out = await sb.exec("sh", ["-c", "echo $GREETING from the sandbox > /root/hello.txt && cat /root/hello.txt"]);
      assert.equal(out.exitCode, 0, out.stderrText);
      assert.equal(out.stdoutText, "hi from the sandbox\n");
      await assert.rejects(sb.snapshot("too-early"), m.SnapshotSandboxRunningError);
      await assert.rejects(m.Sandbox.builder("baseline").image(BUSYBOX_REF).create(), m.SandboxAlreadyExistsError);

      const h = await m.Sandbox.get("baseline");
      await h.stop();
      assert.equal(await h.status(), "stopped");
      await assert.rejects(h.exec("true"), m.SandboxNotRunningError);
      const snap = await m.Snapshot.builder("baseline").name("after-hello").label("stage", "hello").recordIntegrity().create();
      assert.equal(snap.sourceSandbox, "baseline");
      assert.deepEqual(snap.labels, [["stage", "hello"]]);
      assert.equal(typeof snap.sizeBytes, "bigint");
      const report = await snap.verify();
      assert.equal(report.upper.kind, "verified");
      await assert.rejects(m.Snapshot.builder("baseline").name("after-hello").create(), m.SnapshotAlreadyExistsError);
      const copy = await h.snapshotTo(path.join(home.path, "copy"));
      assert.equal(copy.path, path.join(home.path, "copy"));
      await m.Snapshot.export("after-hello", archive, { withImage: true });
    });

    await m.withConfig(second.config, async () => {
      const imported = await m.Snapshot.import(archive);
      assert.equal(imported.name, "after-hello");
      assert.equal((await (await imported.open()).verify()).upper.kind, "verified");
      const fresh = await m.Sandbox.builder("worker").fromSnapshot("after-hello").create();
      const read = await fresh.exec("cat", ["/root/hello.txt"]);
      assert.equal(read.stdoutText, "hi from the sandbox\n");
      await fresh.stop();
      const again = await (await m.Sandbox.get("worker")).start();
      assert.equal((await again.exec("cat", ["/root/hello.txt"])).stdoutText, "hi from the sandbox\n");
      await m.Sandbox.remove("worker");
      assert.deepEqual(await m.Sandbox.list(), []);
    });
  });
});

test("streaming exec: events, stdin, Node streams, kill, wait, abort", async () => {
  await withHomes(async (home) => {
    await m.withConfig(home.config, async () => {
      await loadBusybox(home);
      const sb = await m.Sandbox.builder("streamer").image(BUSYBOX_REF).create();

      const proc = await sb.execStream("sh", ["-c", "cat; echo done >&2; exit 3"], { env: { K: "V" }, cwd: "/tmp" });
      await proc.write("line one\n");
      await proc.write(Buffer.from("line two\n"));
      await proc.closeStdin();
      let stdout = "";
      let stderr = "";
      let exit: m.ExecEvent | null = null;
      for await (const ev of proc) {
        if (ev.type === "stdout") stdout += ev.data.toString();
        else if (ev.type === "stderr") stderr += ev.data.toString();
        else exit = ev;
      }
      assert.equal(stdout, "line one\nline two\n");
      assert.equal(stderr, "done\n");
      assert.ok(exit && exit.type === "exit" && exit.code === 3 && exit.signal === null);
      assert.deepEqual(await proc.wait(), { code: 3, signal: null, timedOut: false });

      const env = await sb.exec("sh", ["-c", "echo $K; pwd"], { env: { K: "V" }, cwd: "/tmp" });
      assert.equal(env.stdoutText, "V\n/tmp\n");
      const limited = await sb.exec("sh", ["-c", "head -c 100000 /dev/zero"], { outputLimit: 1000n });
      assert.equal(limited.stdout.length, 1000);
      assert.equal(limited.stdoutTruncated, true);

      const sleeper = await sb.execStream("sleep", ["30"]);
      setTimeout(() => sleeper.kill("SIGINT"), 100);
      const st = await sleeper.wait();
      assert.equal(st.signal, 2);
      assert.equal(st.code, 130);

      const timed = await sb.exec("sleep", ["30"], { timeoutMs: 300 });
      assert.equal(timed.timedOut, true);

      const piped = await sb.execStream("sh", ["-c", "tr a-z A-Z"]);
      const chunks: Buffer[] = [];
      piped.stdout.on("data", (c: Buffer) => chunks.push(c));
      piped.stdin.end("through node streams\n");
      await new Promise((r) => piped.stdout.on("end", r));
      assert.equal(Buffer.concat(chunks).toString(), "THROUGH NODE STREAMS\n");
      assert.equal((await piped.wait()).code, 0);

      const controller = new AbortController();
      const long = await sb.execStream("sleep", ["30"], { signal: controller.signal });
      setTimeout(() => controller.abort(), 100);
      await assert.rejects(long.wait(), m.CancelledError);
      const c2 = new AbortController();
      setTimeout(() => c2.abort(), 100);
      await assert.rejects(sb.exec("sleep", ["30"], { signal: c2.signal }), m.CancelledError);
      // The sandbox still serves commands afterwards.
      assert.equal((await sb.exec("echo", ["ok"])).stdoutText, "ok\n");
      await sb.remove();
    });
  });
});

test("aborting a boot kills the half-booted VM and removes the sandbox", async () => {
  await withHomes(async (home) => {
    await m.withConfig(home.config, async () => {
      await loadBusybox(home);
      const controller = new AbortController();
      setTimeout(() => controller.abort(), 300);
      const started = Date.now();
      await assert.rejects(m.Sandbox.builder("aborted").image(BUSYBOX_REF).create({ signal: controller.signal }), m.CancelledError);
      assert.ok(Date.now() - started < 2000);
      assert.deepEqual(await m.Sandbox.list(), []);
      assert.deepEqual(vmPids(home.path), []);
    });
  });
});

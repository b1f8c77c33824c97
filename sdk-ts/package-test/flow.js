// The typical flow of the reference (plus a full-VM snapshot, resume and a
// fork, and a snapshot push and pull through the registry $MSB_TEST_REGISTRY), run from a fresh project that installed the two tarballs: no Rust toolchain, no MSB_KERNEL_DIR; the guest assets
// come from the platform package. Homes live under $MSB_TEST_TMP so that
// leftover VMs of a failed run can be found; every sandbox is removed.
"use strict";
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const { Image, Sandbox, Snapshot, withConfig } = require("microsandbox");

async function main() {
  assert.equal(process.env.MSB_KERNEL_DIR, undefined, "MSB_KERNEL_DIR must not be set here");
  const platform = path.dirname(require.resolve("microsandbox-linux-x64-gnu"));
  assert.ok(fs.existsSync(path.join(platform, "microsandbox-guest", "msb-guest-init")), "guest assets missing from the platform package");
  const tmp = fs.mkdtempSync(path.join(process.env.MSB_TEST_TMP, "msb-ts-pkg-"));
  const first = { home: path.join(tmp, "first") };
  const second = { home: path.join(tmp, "second") };
  const third = { home: path.join(tmp, "third") };
  const archive = path.join(tmp, "baseline.tar.zst");
  try {
    await withConfig(first, async () => {
      await Image.buildBusybox(path.join(tmp, "busybox.tar"), { reference: "local/busybox:latest" });
      await Image.load(path.join(tmp, "busybox.tar"));
      const sb = await Sandbox.builder("baseline").image("local/busybox:latest").create();
      const w = await sb.exec("sh", ["-c", "echo packaged > /root/note.txt"]);
      assert.equal(w.exitCode, 0, w.stderrText);
      // A full snapshot of the running sandbox, resume, fork, exec in the fork.
      const full = await sb.snapshot();
      assert.equal(full.kind, "full");
      assert.equal(await sb.status(), "paused");
      await sb.resume();
      const fork = await full.restore("fork");
      const f = await fork.exec("sh", ["-c", "hostname; cat /root/note.txt"]);
      assert.equal(f.stdoutText, "fork\npackaged\n");
      await fork.remove();
      console.log("full snapshot captured, resumed, forked and ran a command in the fork");
      await sb.stop();
      const snap = await Snapshot.builder("baseline").name("after-note").recordIntegrity().create();
      const report = await snap.verify();
      assert.equal(report.upper.kind, "verified");
      await Snapshot.export("after-note", archive, { withImage: true });
      console.log(`snapshot ${snap.digest} (${snap.sizeBytes} bytes) verified and exported`);
    });
    await withConfig(second, async () => {
      const h = await Snapshot.import(archive);
      const fresh = await Sandbox.builder("worker").fromSnapshot(h.name ?? h.path).create();
      const r = await fresh.exec("cat", ["/root/note.txt"]);
      assert.equal(r.stdoutText, "packaged\n");
      console.log("booted from the imported snapshot in a second home and read the file back");
    });
    const ref = `${process.env.MSB_TEST_REGISTRY}/snaps/after-note:1`;
    const sent = await withConfig(first, async () => {
      await Snapshot.push("after-note", ref);
      return (await Snapshot.get("after-note")).digest;
    });
    await withConfig(third, async () => {
      const pulled = await Snapshot.pull(ref);
      assert.equal(pulled.digest, sent);
      console.log(`snapshot pushed to and pulled from ${ref}`);
    });
  } finally {
    for (const cfg of [first, second]) {
      await withConfig(cfg, async () => {
        for (const sb of await Sandbox.list().catch(() => [])) await sb.remove().catch(() => {});
      });
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().then(
  () => console.log("package test: ok"),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);

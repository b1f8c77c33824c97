/**
 * Registries, against a real docker-registry on 127.0.0.1 (started by
 * scripts/test-registry.sh for this file) and real VMs: a snapshot pushed
 * from one home is pulled into another and boots with its file; an image
 * pushed by us (and one seeded by skopeo) is pulled with its origin; save,
 * remove; and the errors a registry call can end in, cancellation included.
 */

import { after, before, test } from "node:test";
import * as assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import * as m from "microsandbox";
import { BUSYBOX_REF, REPO, TestHome } from "./helpers";

const SCRIPT = path.join(REPO, "scripts", "test-registry.sh");
const registryDir = fs.mkdtempSync(path.join(os.tmpdir(), "msb-ts-registry-"));
let host = "";

before(() => {
  host = execFileSync(SCRIPT, ["start", registryDir], { encoding: "utf8" }).trim();
  // Credentials come from here only, never the user's ~/.docker.
  process.env.DOCKER_CONFIG = path.join(registryDir, "docker");
});

after(() => {
  execFileSync(SCRIPT, ["stop", registryDir]);
  fs.rmSync(registryDir, { recursive: true, force: true });
});

/** Copy an OCI archive into the registry with skopeo; the manifest digest it holds. */
function skopeoPush(archive: string, target: string): string {
  execFileSync("skopeo", ["copy", "--quiet", "--dest-tls-verify=false", `oci-archive:${archive}`, `docker://${target}`]);
  const digest = execFileSync("skopeo", ["inspect", "--tls-verify=false", "--format", "{{.Digest}}", `docker://${target}`], { encoding: "utf8" });
  return digest.trim();
}

/** The phases of `events` in order, each once; each phase's events ordered and ending at its total. */
function phases(events: m.ProgressEvent[]): string[] {
  const seen: string[] = [];
  events.forEach((e, i) => {
    const prev = events[i - 1];
    if (prev === undefined || prev.phase !== e.phase) {
      if (prev) assert.equal(prev.doneBytes, prev.totalBytes, `phase ${prev.phase} ended short`);
      seen.push(e.phase);
    } else {
      assert.ok(e.doneBytes >= prev.doneBytes, `event ${i} goes backwards`);
    }
  });
  const last = events[events.length - 1];
  assert.ok(last && last.doneBytes === last.totalBytes);
  return seen;
}

/** A loopback address nobody listens on. */
async function closedPort(): Promise<string> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `127.0.0.1:${port}`;
}

/** Run `body` with `n` homes; remove their sandboxes and VMs afterwards. */
async function withHomes(n: number, body: (...homes: TestHome[]) => Promise<void>): Promise<void> {
  const homes = Array.from({ length: n }, () => new TestHome());
  try {
    await body(...homes);
  } finally {
    for (const h of homes) {
      await m.withConfig(h.config, async () => {
        for (const sb of await m.Sandbox.list().catch(() => [])) await sb.remove().catch(() => {});
      });
    }
    const leftovers = homes.flatMap((h) => h.cleanup());
    assert.deepEqual(leftovers, [], "QEMU processes outlived the test");
  }
}

test("normaliseReference: Docker's rules; a malformed reference is InvalidConfig", () => {
  assert.equal(m.normaliseReference("python"), "docker.io/library/python:latest");
  assert.equal(m.normaliseReference("127.0.0.1:5000/snaps/a:2"), "127.0.0.1:5000/snaps/a:2");
  assert.throws(() => m.normaliseReference("Not A Reference!"), m.InvalidConfigError);
});

test("a snapshot and an image through a registry, into second homes", async () => {
  assert.ok(process.env.MSB_KERNEL_DIR, "MSB_KERNEL_DIR is not set: run the suite with `make test-ts`");
  await withHomes(4, async (home, second, imageHome, third) => {
    const ref = `${host}/snaps/noted:1`;
    let snapDigest = "";
    await m.withConfig(home.config, async () => {
      const archive = path.join(home.path, "busybox.tar");
      await m.Image.buildBusybox(archive, { reference: BUSYBOX_REF });
      const loaded = await m.Image.load(archive);
      assert.equal(loaded.origin, null);

      // The image, pushed (its digest kept), pulled into another home with its origin.
      const pushEvents: m.ProgressEvent[] = [];
      const seeded = await m.Image.push(BUSYBOX_REF, `${host}/busybox:1`, { onProgress: (e) => pushEvents.push(e) });
      assert.equal(seeded, loaded.manifestDigest);
      assert.deepEqual(phases(pushEvents), ["push"]);
      await m.withConfig(imageHome.config, async () => {
        const events: m.ProgressEvent[] = [];
        const pulled = await m.Image.pull(`${host}/busybox:1`, { onProgress: (e) => events.push(e) });
        assert.equal(pulled.manifestDigest, seeded);
        assert.equal(pulled.configDigest, loaded.configDigest);
        assert.equal(pulled.origin, `${host}/busybox:1`);
        assert.deepEqual(phases(events), ["pull", "load"]);
        assert.equal((await m.Image.get(`${host}/busybox:1`)).origin, `${host}/busybox:1`);
        // Nothing pins it there: it goes, and a second remove finds nothing.
        await m.Image.remove(`${host}/busybox:1`);
        await assert.rejects(m.Image.remove(`${host}/busybox:1`), m.ImageNotFoundError);
        assert.deepEqual(await m.Image.list(), []);
      });

      // A snapshot with a file, pushed, then pushed again to the same digest.
      const sb = await m.Sandbox.builder("writer").image(BUSYBOX_REF).create();
      const out = await sb.exec("sh", ["-c", "echo through the registry > /root/note.txt"]);
      assert.equal(out.exitCode, 0, out.stderrText);
      await sb.stop();
      const snap = await m.Snapshot.builder("writer").name("noted").recordIntegrity().create();
      snapDigest = snap.digest;
      const events: m.ProgressEvent[] = [];
      const digest = await m.Snapshot.push("noted", ref, { onProgress: (e) => events.push(e) });
      assert.match(digest, /^sha256:[0-9a-f]{64}$/);
      assert.equal(phases(events).at(-1), "push");
      assert.equal(await m.Snapshot.push(snap.path, ref), digest);

      // The image a snapshot pins cannot be removed; saved, it loads elsewhere with its digest.
      await assert.rejects(m.Image.remove(BUSYBOX_REF), m.ImageInUseError);
      const saved = path.join(home.path, "saved.tar");
      const saveEvents: m.ProgressEvent[] = [];
      await m.Image.save(BUSYBOX_REF, saved, { onProgress: (e) => saveEvents.push(e) });
      assert.deepEqual(phases(saveEvents), ["export"]);
      await m.withConfig(imageHome.config, async () => {
        assert.equal((await m.Image.load(saved)).manifestDigest, loaded.manifestDigest);
      });
    });

    // Pulled into a second home: it verifies and boots with the file.
    await m.withConfig(second.config, async () => {
      const events: m.ProgressEvent[] = [];
      const handle = await m.Snapshot.pull(ref, { onProgress: (e) => events.push(e) });
      assert.equal(handle.digest, snapDigest);
      assert.equal(handle.name, "noted");
      assert.deepEqual(phases(events), ["pull", "import"]);
      assert.equal((await (await handle.open()).verify()).upper.kind, "verified");
      const reader = await m.Sandbox.builder("reader").fromSnapshot("noted").create();
      assert.equal((await reader.exec("cat", ["/root/note.txt"])).stdoutText, "through the registry\n");
      await reader.stop();
    });

    // Into a directory of one's choosing.
    await m.withConfig(third.config, async () => {
      const dest = path.join(third.path, "elsewhere");
      const handle = await m.Snapshot.pull(ref, { dest });
      assert.ok(handle.path.startsWith(dest), handle.path);
    });
  });
});

test("registry errors: unknown reference, closed port, malformed reference, abort", async () => {
  await withHomes(1, async (home) => {
    await m.withConfig(home.config, async () => {
      await assert.rejects(m.Image.pull(`${host}/nothing-here:1`), m.ImageNotFoundError);
      await assert.rejects(m.Snapshot.pull(`${host}/snaps/nothing:1`), m.ImageNotFoundError);
      await assert.rejects(m.Image.pull(`${await closedPort()}/busybox:1`), m.RegistryError);
      await assert.rejects(m.Image.pull("Not A Reference!"), m.InvalidConfigError);
      await assert.rejects(m.Snapshot.push("no-such-snapshot", `${host}/snaps/x:1`), m.SnapshotNotFoundError);

      // Aborted at its first progress event: CancelledError, nothing in the home.
      const archive = path.join(home.path, "busybox-src.tar");
      await m.Image.buildBusybox(archive, { reference: "busybox:2" });
      skopeoPush(archive, `${host}/busybox:2`);
      fs.rmSync(archive);
      const abort = new AbortController();
      await assert.rejects(
        m.Image.pull(`${host}/busybox:2`, { signal: abort.signal, onProgress: () => abort.abort() }),
        m.CancelledError,
      );
      for (const sub of ["blobs/sha256", "lower", "tmp"]) {
        const dir = path.join(home.path, "images", sub);
        assert.deepEqual(fs.existsSync(dir) ? fs.readdirSync(dir) : [], [], `images/${sub}`);
      }
      assert.deepEqual(await m.Image.list(), []);
    });
  });
});

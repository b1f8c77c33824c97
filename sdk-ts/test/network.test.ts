/**
 * Guest networking through the TypeScript SDK (`docs/network.md`) on real
 * VMs: a sandbox under `none` has only `lo`, a published port answers
 * from the host's loopback, and bad network options fail before any VM
 * starts, leaving no sandbox behind. Every VM is removed by the test.
 */

import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as net from "node:net";
import * as path from "node:path";
import * as m from "microsandbox";
import { BUSYBOX_REF, TestHome } from "./helpers";

/** Run `body` in a fresh home with the busybox image; remove its sandboxes after. */
async function withBusyboxHome(body: () => Promise<void>): Promise<void> {
  assert.ok(process.env.MSB_KERNEL_DIR, "MSB_KERNEL_DIR is not set: run the suite with `make test-ts`");
  const home = new TestHome();
  try {
    await m.withConfig(home.config, async () => {
      const archive = path.join(home.path, "busybox.tar");
      await m.Image.buildBusybox(archive, { reference: BUSYBOX_REF });
      await m.Image.load(archive);
      try {
        await body();
      } finally {
        for (const sb of await m.Sandbox.list().catch(() => [])) await sb.remove().catch(() => {});
      }
    });
  } finally {
    assert.deepEqual(home.cleanup(), [], "QEMU processes outlived the test");
  }
}

/** Listen on a free port of 127.0.0.1; the caller closes the server. */
async function listenOnFreePort(): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  return { server, port: (server.address() as net.AddressInfo).port };
}

async function closeServer(server: net.Server): Promise<void> {
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/** Connect to 127.0.0.1:port and read until the peer closes ("" when refused). */
function readAnswer(port: number): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = net.connect(port, "127.0.0.1");
    socket.setTimeout(5000, () => socket.destroy());
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", () => resolve(""));
    socket.on("close", () => resolve(Buffer.concat(chunks).toString()));
  });
}

test("a sandbox under network none has only lo", async () => {
  await withBusyboxHome(async () => {
    const sb = await m.Sandbox.builder("offline").image(BUSYBOX_REF).network("none").create();
    const out = await sb.exec("sh", ["-c", "tail -n +3 /proc/net/dev | cut -d: -f1"]);
    assert.equal(out.exitCode, 0, out.stderrText);
    assert.deepEqual(out.stdoutText.split(/\s+/).filter((s) => s !== ""), ["lo"]);
  });
});

test("a published port answers from the host's loopback", async () => {
  await withBusyboxHome(async () => {
    const free = await listenOnFreePort();
    await closeServer(free.server);
    const sb = await m.Sandbox.builder("server").image(BUSYBOX_REF).network("public").port(free.port, 8080).create();
    const started = await sb.exec("sh", [
      "-c",
      "setsid nc -ll -p 8080 -e echo hi-from-guest </dev/null >/dev/null 2>&1 &",
    ]);
    assert.equal(started.exitCode, 0, started.stderrText);
    // Until the server listens, msb-netd closes the connection with nothing read.
    let answer = "";
    for (let attempt = 0; attempt < 30 && answer === ""; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, 200));
      answer = await readAnswer(free.port);
    }
    assert.equal(answer, "hi-from-guest\n");
  });
});

test("bad network options fail with InvalidConfig before any VM", async () => {
  await withBusyboxHome(async () => {
    const taken = await listenOnFreePort();
    try {
      const cases: Array<[string, (b: m.SandboxBuilder) => m.SandboxBuilder]> = [
        ["unknown-policy", (b) => b.network("everything" as m.NetworkPolicy)],
        ["host-bits-set", (b) => b.allow("10.0.0.1/8")],
        ["taken-port", (b) => b.port(taken.port, 8080)],
      ];
      for (const [name, configure] of cases) {
        await assert.rejects(configure(m.Sandbox.builder(name).image(BUSYBOX_REF)).create(), m.InvalidConfigError, name);
        await assert.rejects(m.Sandbox.get(name), m.SandboxNotFoundError, name);
      }
      assert.throws(() => m.Sandbox.builder("bad-port").port(70000, 80), m.InvalidConfigError);
      assert.throws(() => m.Sandbox.builder("port-zero").port(0, 80), m.InvalidConfigError);
      assert.deepEqual(await m.Sandbox.list(), []);
    } finally {
      await closeServer(taken.server);
    }
  });
});

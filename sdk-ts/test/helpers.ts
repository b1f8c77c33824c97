/**
 * Fixtures of the SDK's tests: temporary homes (under `$TMPDIR`, which
 * `make test` points at target/test-tmp), artifacts written the way the
 * core's own tests write them (canonical manifest, sparse upper, integrity
 * digests from the `msb` CLI), and the VMs a test started.
 */

import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { configure, withConfig, type Config } from "microsandbox";

/** The repository root (tests run from the checkout). */
export const REPO = path.resolve(__dirname, "..", "..", "..");
/** The `msb` CLI cargo built beside the addon. */
export const MSB = path.join(REPO, "target", "debug", "msb");
/** Reference of the busybox image the VM tests load. */
export const BUSYBOX_REF = "local/busybox:test";

// Calls that escape their test's scope fail loudly instead of using ~/.microsandbox.
configure({ home: "/proc/self/msb-test-call-outside-a-test-home" });

/** A temporary home for one test, with the guest assets of `MSB_KERNEL_DIR`. */
export class TestHome {
  readonly path: string;
  readonly config: Config;

  constructor() {
    this.path = fs.mkdtempSync(path.join(os.tmpdir(), "msb-ts-"));
    const assets = process.env.MSB_KERNEL_DIR;
    this.config = { home: this.path, ...(assets ? { guestAssetsDir: assets } : {}) };
  }

  get snapshotsDir(): string {
    return path.join(this.path, "snapshots");
  }

  /** Kill VMs of this home still alive; remove the directory. Returns the pids killed. */
  cleanup(): number[] {
    const pids = vmPids(this.path);
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    fs.rmSync(this.path, { recursive: true, force: true });
    return pids;
  }
}

/** Live processes whose command line mentions `needle`. */
export function vmPids(needle: string): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${entry}/cmdline`, "utf8");
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      if (cmd.includes(needle) && !/\) Z /.test(stat)) out.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** Fields of a test manifest. */
export interface ManifestFields {
  size: bigint;
  integrity?: { algorithm: string; digest: string } | null;
  createdAt?: string;
  labels?: Record<string, string>;
  parent?: string | null;
  imageRef?: string;
}

export const IMAGE_DIGEST = `sha256:${"ab".repeat(32)}`;

/** The canonical manifest bytes (fields in declaration order, labels sorted). */
export function manifestJson(f: ManifestFields): string {
  const labels = Object.fromEntries(Object.entries(f.labels ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const manifest = {
    schema: 1,
    format: "raw",
    fstype: "ext4",
    image: { ref: f.imageRef ?? BUSYBOX_REF, manifest_digest: IMAGE_DIGEST },
    parent: f.parent ?? null,
    created_at: f.createdAt ?? "2026-11-20T10:00:00Z",
    labels,
    upper: { file: "upper.ext4", size_bytes: "__SIZE__", integrity: f.integrity ?? null },
    source_sandbox: "api",
  };
  // Sizes are written exactly, whatever their magnitude.
  return JSON.stringify(manifest).replace('"__SIZE__"', f.size.toString());
}

/** The integrity digest of `file` under `algorithm`, from the `msb` CLI. */
export function upperDigest(file: string, algorithm: string): string {
  const out = execFileSync(MSB, ["upper", "digest", "--algorithm", algorithm, "--json", file], { encoding: "utf8" });
  return (JSON.parse(out) as { digest: string }).digest;
}

/**
 * An artifact in `dir`: a sparse upper of apparent `size` (with `data`
 * written at 1 MiB if given) and its manifest, integrity recorded with
 * `algorithm` if given.
 */
export function makeArtifact(
  dir: string,
  size: bigint,
  opts: { data?: Buffer; algorithm?: string; createdAt?: string; labels?: Record<string, string> } = {},
): void {
  fs.mkdirSync(dir, { recursive: true });
  const upper = path.join(dir, "upper.ext4");
  execFileSync("truncate", ["-s", size.toString(), upper]);
  if (opts.data) {
    const fd = fs.openSync(upper, "r+");
    fs.writeSync(fd, opts.data, 0, opts.data.length, 1 << 20);
    fs.closeSync(fd);
  }
  const integrity = opts.algorithm ? { algorithm: opts.algorithm, digest: upperDigest(upper, opts.algorithm) } : null;
  fs.writeFileSync(
    path.join(dir, "manifest.json"),
    manifestJson({ size, integrity, ...(opts.createdAt ? { createdAt: opts.createdAt } : {}), ...(opts.labels ? { labels: opts.labels } : {}) }),
  );
}

/**
 * Case A of the issues: a 4 GiB sparse ext4 upper made by `mkfs.ext4 -d`
 * over an 8 MiB random file, integrity recorded with `msb-sparse-sha256-v1`.
 */
export function makeCaseA(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  const content = path.join(dir, "..", `${path.basename(dir)}-content`);
  fs.mkdirSync(content, { recursive: true });
  fs.writeFileSync(path.join(content, "random.bin"), require("node:crypto").randomBytes(8 << 20));
  const upper = path.join(dir, "upper.ext4");
  execFileSync("truncate", ["-s", String(4 * 1024 ** 3), upper]);
  execFileSync("mkfs.ext4", ["-q", "-F", "-d", content, upper], { env: { ...process.env, PATH: `${process.env.PATH}:/sbin:/usr/sbin` } });
  fs.rmSync(content, { recursive: true, force: true });
  const algorithm = "msb-sparse-sha256-v1";
  fs.writeFileSync(
    path.join(dir, "manifest.json"),
    manifestJson({ size: 4n * 1024n ** 3n, integrity: { algorithm, digest: upperDigest(upper, algorithm) } }),
  );
}

/** Every path under `root`, relative and sorted. */
export function tree(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      out.push(path.relative(root, p));
      if (e.isDirectory()) walk(p);
    }
  };
  if (fs.existsSync(root)) walk(root);
  return out.sort();
}

/** Run `body` with a fresh home in force (`withConfig`); clean it up after. */
export async function inHome(body: (home: TestHome) => Promise<void>): Promise<void> {
  const home = new TestHome();
  try {
    await withConfig(home.config, () => body(home));
  } finally {
    home.cleanup();
  }
}

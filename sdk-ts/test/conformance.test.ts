/**
 * Runs every case of tests/conformance/cases/*.json through the public API
 * (format in tests/conformance/README.md), as the Rust runner does.
 */

import { test } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as m from "microsandbox";
import { REPO, TestHome } from "./helpers";

interface Write {
  offset: number;
  pattern: string;
  len: number;
}
interface Step extends Partial<Write> {
  op: string;
  target?: string;
  expect?: { ok?: { digest?: string; size_bytes?: number; upper?: Record<string, string> }; error?: string };
}
interface Case {
  name: string;
  artifact: null | {
    location?: { name?: string };
    manifest_bytes?: string;
    upper?: null | { size: number; writes: Write[] };
  };
  steps: Step[];
}

const CASES_DIR = path.join(REPO, "tests", "conformance", "cases");

function writeAt(file: string, w: Write): void {
  const pattern = Buffer.from(w.pattern, "utf8");
  const bytes = Buffer.alloc(w.len);
  for (let i = 0; i < w.len; i++) bytes[i] = pattern[i % pattern.length]!;
  const fd = fs.openSync(file, "r+");
  fs.writeSync(fd, bytes, 0, bytes.length, w.offset);
  fs.closeSync(fd);
}

function materialize(artifact: NonNullable<Case["artifact"]>, dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  if (artifact.manifest_bytes !== undefined) fs.writeFileSync(path.join(dir, "manifest.json"), artifact.manifest_bytes);
  if (artifact.upper) {
    const upper = path.join(dir, "upper.ext4");
    fs.writeFileSync(upper, "");
    fs.truncateSync(upper, artifact.upper.size);
    for (const w of artifact.upper.writes) writeAt(upper, w);
  }
}

/** The SDK's upper status in the cases' spelling. */
function upperAsCase(report: m.SnapshotVerifyReport): Record<string, string> {
  if (report.upper.kind === "verified") {
    return { kind: "verified", algorithm: report.upper.algorithm, digest: report.upper.digest };
  }
  return { kind: "not_recorded" };
}

function kindOf(err: unknown): string {
  if (err instanceof m.MicrosandboxError) return err.code;
  throw err;
}

async function runCase(c: Case, scratch: string, home: string): Promise<void> {
  const bare = c.artifact?.location?.name;
  const dir = bare !== undefined ? path.join(home, "snapshots", bare) : path.join(scratch, "artifact");
  if (c.artifact) materialize(c.artifact, dir);
  let opened: m.Snapshot | null = null;
  for (const [i, step] of c.steps.entries()) {
    const where = `${c.name} step ${i}`;
    const expect = step.expect ?? {};
    switch (step.op) {
      case "open": {
        let snap: m.Snapshot;
        try {
          snap = await m.Snapshot.open(step.target ?? dir);
        } catch (err) {
          assert.equal(kindOf(err), expect.error, `${where}: ${(err as Error).message}`);
          return;
        }
        assert.ok(expect.ok, `${where}: expected ${expect.error}, open succeeded`);
        if (expect.ok.digest !== undefined) assert.equal(snap.digest, expect.ok.digest, where);
        if (expect.ok.size_bytes !== undefined) assert.equal(snap.sizeBytes, BigInt(expect.ok.size_bytes), where);
        assert.equal(typeof snap.sizeBytes, "bigint");
        opened = snap;
        break;
      }
      case "verify": {
        assert.ok(opened, `${where}: verify needs a successful open first`);
        let report: m.SnapshotVerifyReport;
        try {
          report = await opened.verify();
        } catch (err) {
          assert.equal(kindOf(err), expect.error, `${where}: ${(err as Error).message}`);
          break;
        }
        assert.ok(expect.ok, `${where}: expected ${expect.error}, verify succeeded`);
        assert.deepEqual(upperAsCase(report), expect.ok.upper, where);
        break;
      }
      case "write_upper":
        writeAt(path.join(dir, "upper.ext4"), step as Write);
        break;
      case "delete_upper":
        fs.rmSync(path.join(dir, "upper.ext4"));
        break;
      default:
        assert.fail(`${c.name}: unknown op ${step.op}`);
    }
  }
}

const files = fs.readdirSync(CASES_DIR).filter((f) => f.endsWith(".json")).sort();

test("the conformance cases are there", () => {
  assert.ok(files.length >= 3, `found ${files.join(", ")}`);
});

for (const file of files) {
  const suite = JSON.parse(fs.readFileSync(path.join(CASES_DIR, file), "utf8")) as { format: string; cases: Case[] };
  test(`conformance ${file}: all ${suite.cases.length} cases`, async () => {
    assert.equal(suite.format, "microsandbox-conformance-v1");
    assert.ok(suite.cases.length > 0);
    const home = new TestHome();
    try {
      await m.withConfig(home.config, async () => {
        const failures: string[] = [];
        for (const [i, c] of suite.cases.entries()) {
          const scratch = path.join(home.path, `case-${i}`);
          fs.mkdirSync(scratch, { recursive: true });
          try {
            await runCase(c, scratch, home.path);
          } catch (err) {
            failures.push(`${c.name}: ${(err as Error).message}`);
          }
        }
        assert.deepEqual(failures, [], `${failures.length} of ${suite.cases.length} cases failed`);
      });
    } finally {
      home.cleanup();
    }
  });
}

/**
 * The TypeScript reference pages (copies in `sdk-ts/reference/`, checked
 * against `../shared/seeds/` when present) type-check against the package's
 * `.d.ts`: every code block (fenced ones of the .mdx, the code of the text
 * summary) becomes a file — examples as written, signatures as assignments
 * to the receiver's member, type declarations as mutual assignability — and
 * `tsc --noEmit` must pass; a file using the verify report's union without
 * narrowing must fail with the expected error.
 */

import { test } from "node:test";
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { REPO } from "./helpers";

const SDK = path.join(REPO, "sdk-ts");
const REFERENCE = path.join(SDK, "reference");
const PAGES = ["snapshots-typescript.mdx", "snapshots-typescript-summary.txt"];
const OUT = path.join(SDK, "dist-test", "examples");

interface Snippet {
  text: string;
  receiver: string;
}

/** Fenced ts/typescript blocks of the .mdx, with the receiver their heading names. */
function mdxSnippets(text: string): Snippet[] {
  const out: Snippet[] = [];
  let section = "";
  let receiver = "";
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.startsWith("## ")) section = line;
    const recv = /msb-recv">([^<]*)</.exec(line)?.[1] ?? (/id="snapshothandle(open|remove)"/.test(line) ? "snapshotHandle." : undefined);
    if (line.startsWith("### SnapshotHandle")) receiver = "SnapshotHandle";
    if (recv !== undefined) {
      receiver =
        recv === "."
          ? section.includes("SnapshotBuilder")
            ? "SnapshotBuilder"
            : "SandboxBuilder"
          : ({ "handle.": "SandboxHandle", "Snapshot.": "Snapshot", "snap.": "Snapshot", "snapshotHandle.": "SnapshotHandle" } as Record<string, string>)[recv] ?? "";
    }
    if (/^```(ts|typescript)\s*$/.test(line)) {
      const body: string[] = [];
      for (i++; i < lines.length && !lines[i]!.startsWith("```"); i++) body.push(lines[i]!);
      out.push({ text: body.join("\n"), receiver });
    }
  }
  return out;
}

const SIGNATURE = /^(static |get |readonly )?[A-Za-z]\w*(\(.*\))?: .+$/;
const CODE_START = /^(const |await |export |import |h\.|for \()/;
const CODE_CONT = /^(\s|\.|\}|\||h\.|const |await |if |export |\/\/|for \()/;

/** The code of the rendered text summary (it has no fences). */
function summarySnippets(text: string): Snippet[] {
  const out: Snippet[] = [];
  const heads: Record<string, string> = {
    SandboxBuilder: "SandboxBuilder",
    "SandboxHandle methods": "SandboxHandle",
    "Snapshot (instance)": "Snapshot",
    "Snapshot.builder()": "Snapshot",
    "Snapshot (static)": "Snapshot",
    SnapshotHandle: "SnapshotHandle",
    Types: "",
  };
  let receiver = "";
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (heads[line.trim()] !== undefined) receiver = heads[line.trim()]!;
    if (CODE_START.test(line)) {
      const body = [line];
      while (i + 1 < lines.length && (CODE_CONT.test(lines[i + 1]!) || (lines[i + 1] === "" && CODE_CONT.test(lines[i + 2] ?? "")))) {
        body.push(lines[++i]!);
      }
      out.push({ text: body.join("\n"), receiver });
    } else if (SIGNATURE.test(line) && !/\s{2,}\/\//.test(line)) {
      out.push({ text: line, receiver });
    }
  }
  return out;
}

const IMPORTS =
  'import { Sandbox, SandboxBuilder, SandboxHandle, Snapshot, SnapshotBuilder, SnapshotHandle } from "microsandbox";\n' +
  'import type { ExportOpts, SnapshotVerifyReport } from "microsandbox";\n';

const EQUAL_KEYS = "type __EqualKeys<A, B> = [keyof A] extends [keyof B] ? ([keyof B] extends [keyof A] ? true : false) : false;\n";

/** A checkable module for one snippet. */
function toModule(s: Snippet): string {
  const t = s.text.trim();
  const sig = /^(static |get |readonly )?([A-Za-z]\w*)(\((.*)\))?: (.+)$/.exec(t);
  if (sig && !t.includes("\n") && !t.startsWith("const ") && !t.startsWith("type ")) {
    const [, mod, name, call, params, ret] = sig;
    const recv = s.receiver || "Snapshot";
    const result = ret === "this" ? recv : ret;
    if (mod === "static ") return `${IMPORTS}const __f: (${params}) => ${result} = ${recv}.${name};\nexport {};\n`;
    if (call === undefined || mod === "get ") {
      return `${IMPORTS}declare const __r: ${recv};\nconst __v: ${result} = __r.${name};\nexport {};\n`;
    }
    return `${IMPORTS}declare const __r: ${recv};\nconst __f: (${params}) => ${result} = __r.${name};\nexport {};\n`;
  }
  if (/^(export )?(type|interface) \w+/.test(t)) {
    const names = [...t.matchAll(/^(?:export )?(?:type|interface) (\w+)/gm)].map((d) => d[1]!);
    let body = t.replace(/^export /gm, "");
    let checks = "";
    for (const name of names) {
      const ref = `__Ref${name}`;
      body = body.replace(new RegExp(`\\b(type|interface) ${name}\\b`), `$1 ${ref}`);
      checks +=
        `{ const __a = null as unknown as ${ref}; const __b = null as unknown as ${name};\n` +
        `  const __c1: ${name} = __a; const __c2: ${ref} = __b; const __k: __EqualKeys<${name}, ${ref}> = true; }\n`;
    }
    return `${IMPORTS}${EQUAL_KEYS}${body}\n${checks}export {};\n`;
  }
  let header = /^import /m.test(t) ? "" : IMPORTS;
  const free: Record<string, string> = {
    h: s.receiver === "SandboxHandle" ? "SandboxHandle" : "SnapshotHandle",
    snap: "Snapshot",
    sb: "Sandbox",
  };
  for (const [name, type] of Object.entries(free)) {
    if (new RegExp(`\\b${name}\\.`).test(t) && !new RegExp(`\\b(const|let) ${name}\\b`).test(t)) {
      header += `declare const ${name}: ${type};\n`;
    }
  }
  const typed = t.replace(
    /^(\w+)\.(\w+);\s*\/\/\s*([^(—\n]+?)\s*(\(.*\)|—.*)?$/gm,
    (_m, obj: string, member: string, type: string) => `{ const __v: ${type} = ${obj}.${member}; }`,
  );
  return `${header}${typed}\nexport {};\n`;
}

function tsc(dir: string, files: string[]): { status: number | null; output: string } {
  const config = {
    compilerOptions: {
      target: "es2022",
      module: "es2022",
      moduleResolution: "bundler",
      strict: true,
      noEmit: true,
      skipLibCheck: false,
      baseUrl: dir,
      paths: { microsandbox: [path.join(SDK, "dist", "index.d.ts")] },
      typeRoots: [path.join(SDK, "node_modules", "@types")],
      types: ["node"],
    },
    files,
  };
  fs.writeFileSync(path.join(dir, "tsconfig.json"), JSON.stringify(config, null, 2));
  const r = spawnSync(process.execPath, [path.join(SDK, "node_modules", "typescript", "bin", "tsc"), "-p", dir], { encoding: "utf8" });
  return { status: r.status, output: r.stdout + r.stderr };
}

test("the reference copies equal ../shared/seeds when those exist", (t) => {
  const seeds = path.join(REPO, "..", "shared", "seeds");
  if (!fs.existsSync(seeds)) {
    t.diagnostic(`${seeds} absent (fresh clone): the copies in sdk-ts/reference are used as they are`);
    return;
  }
  for (const page of PAGES) {
    assert.ok(fs.readFileSync(path.join(REFERENCE, page)).equals(fs.readFileSync(path.join(seeds, page))), `${page} differs from the seed`);
  }
});

test("every TypeScript example of both reference pages type-checks against the .d.ts", () => {
  fs.rmSync(path.join(OUT, "ok"), { recursive: true, force: true });
  fs.mkdirSync(path.join(OUT, "ok"), { recursive: true });
  const files: string[] = [];
  const counts: Record<string, number> = {};
  for (const page of PAGES) {
    const text = fs.readFileSync(path.join(REFERENCE, page), "utf8");
    const snippets = page.endsWith(".mdx") ? mdxSnippets(text) : summarySnippets(text);
    counts[page] = snippets.length;
    snippets.forEach((s, i) => {
      const file = path.join(OUT, "ok", `${page.replace(/\W/g, "_")}_${String(i).padStart(2, "0")}.ts`);
      fs.writeFileSync(file, `// ${page}, block ${i}\n${toModule(s)}`);
      files.push(file);
    });
  }
  assert.equal(counts["snapshots-typescript.mdx"], 50, "fenced blocks of the .mdx");
  assert.ok((counts["snapshots-typescript-summary.txt"] ?? 0) >= 25, `summary snippets: ${counts["snapshots-typescript-summary.txt"]}`);
  const r = tsc(path.join(OUT, "ok"), files);
  assert.equal(r.status, 0, r.output);
});

test("using the verify report's union without narrowing fails to type-check", () => {
  const dir = path.join(OUT, "fail");
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "unnarrowed.ts");
  fs.writeFileSync(
    file,
    `${IMPORTS}declare const snap: Snapshot;\nconst report = await snap.verify();\n` +
      "// Not narrowed on report.upper.kind: `digest` exists only when verified.\n" +
      "console.log(report.upper.digest, report.upper.algorithm);\nexport {};\n",
  );
  const r = tsc(dir, [file]);
  assert.notEqual(r.status, 0, "tsc accepted the un-narrowed union");
  assert.match(r.output, /unnarrowed\.ts\(\d+,\d+\): error TS2339: Property 'digest' does not exist on type '\{ readonly kind: "notRecorded"; \} \| \{ readonly kind: "verified";/);
  assert.match(r.output, /error TS2339: Property 'algorithm' does not exist/);
});

/**
 * Snapshots: `Snapshot` (an opened artifact and the static entry points),
 * `SnapshotBuilder`, `SnapshotHandle` (an index row) and their types, as the
 * TypeScript reference describes them; full-VM snapshots' restore (a fork),
 * `RestoreBuilder`, `saveNamed`, `delete` and `kind`
 * (`docs/full-snapshots.md`).
 */

import { nativeConfig } from "./config";
import { cancellable, progressFn, wrap, type CallOptions, type ProgressOptions } from "./control";
import { InvalidConfigError } from "./errors";
import {
  native,
  type CancelToken,
  type NativeConfig,
  type NativeHandleTable,
  type NativeRestoreSpec,
  type NativeSandbox,
  type NativeSnapshot,
  type NativeSnapshotHandle,
  type NativeVerifyReport,
} from "./native";
import { Sandbox } from "./sandbox";
import { GuestSettings } from "./settings";

/** `disk`: the upper of a stopped sandbox (restoring boots cold); `full`: the whole VM (restoring forks). */
export type SnapshotKind = "disk" | "full";

/** One file of a full snapshot's VM half. */
export interface VmFile {
  readonly file: string;
  readonly sizeBytes: bigint;
  readonly integrity: { readonly algorithm: string; readonly digest: string };
}

/** A full snapshot's VM half (its `vm.json`): the machine its state loads into, the state and RAM files, the commands' environment. */
export interface VmSection {
  readonly machine: {
    readonly qemu: string;
    readonly machine: string;
    readonly accel: string;
    readonly cpu: string;
    readonly memoryMib: number;
    readonly cpus: number;
    readonly devices: number;
    readonly protocol: number;
  };
  readonly state: VmFile;
  readonly ram: VmFile;
  readonly env: Readonly<Record<string, string>>;
  readonly workingDir: string;
}

interface VmFileJson {
  file: string;
  size_bytes: number;
  integrity: { algorithm: string; digest: string };
}

function vmFile(f: VmFileJson): VmFile {
  return { file: f.file, sizeBytes: BigInt(f.size_bytes), integrity: { algorithm: f.integrity.algorithm, digest: f.integrity.digest } };
}

function vmSection(json: string): VmSection {
  const v = JSON.parse(json) as {
    machine: Record<string, string | number>;
    state: VmFileJson;
    ram: VmFileJson;
    env: Record<string, string>;
    working_dir: string;
  };
  const mc = v.machine;
  return {
    machine: {
      qemu: mc.qemu as string,
      machine: mc.machine as string,
      accel: mc.accel as string,
      cpu: mc.cpu as string,
      memoryMib: mc.memory_mib as number,
      cpus: mc.cpus as number,
      devices: mc.devices as number,
      protocol: mc.protocol as number,
    },
    state: vmFile(v.state),
    ram: vmFile(v.ram),
    env: v.env,
    workingDir: v.working_dir,
  };
}

/**
 * The overrides of `restoreWith()`. For a full snapshot memory and CPUs may
 * only go down (`InvalidConfigError` above the snapshot's): less memory is
 * handed back through the balloon, fewer CPUs are taken offline. For a disk
 * snapshot they are the ordinary boot settings.
 */
export class RestoreBuilder extends GuestSettings {
  /** @internal */
  spec(): NativeRestoreSpec {
    return this.guestSpec();
  }
}

type Restorer = (config: NativeConfig, spec: NativeRestoreSpec | undefined, token: CancelToken | undefined) => Promise<NativeSandbox>;

/** Run a restore call with `f`'s overrides under `opts.signal`. */
async function restoreWith(
  config: NativeConfig,
  call: Restorer,
  f: ((b: RestoreBuilder) => RestoreBuilder) | undefined,
  opts: CallOptions | undefined,
): Promise<Sandbox> {
  const spec = f === undefined ? undefined : f(new RestoreBuilder()).spec();
  return new Sandbox(await cancellable(opts?.signal, (token) => call(config, spec, token)), config);
}

/** Options of `Snapshot.pull()`. */
export interface PullOpts {
  /** Directory the snapshot lands in (default: the snapshots directory). */
  dest?: string;
}

/** Bundle options of `Snapshot.export()`. All default to `false`. */
export interface ExportOpts {
  /** Walk the parent chain and include each ancestor (no-op in v1). */
  withParents?: boolean;
  /** Include the OCI image so the archive boots offline. */
  withImage?: boolean;
  /** Skip zstd compression and write a plain `.tar`. */
  plainTar?: boolean;
}

/** Result of `snap.verify()`, discriminated on `upper.kind`. */
export type SnapshotVerifyReport =
  | {
      readonly digest: string;
      readonly path: string;
      readonly upper: { readonly kind: "notRecorded" };
    }
  | {
      readonly digest: string;
      readonly path: string;
      readonly upper: {
        readonly kind: "verified";
        readonly algorithm: string;
        readonly digest: string;
      };
    };

/** What `SnapshotBuilder.build()` returns: the accumulated settings. */
export interface SnapshotConfig {
  readonly sourceSandbox: string;
  readonly name?: string;
  readonly path?: string;
  readonly labels: ReadonlyArray<readonly [string, string]>;
  readonly force: boolean;
  readonly recordIntegrity: boolean;
}

function report(r: NativeVerifyReport): SnapshotVerifyReport {
  if (r.upperKind === "verified") {
    return {
      digest: r.digest,
      path: r.path,
      upper: { kind: "verified", algorithm: r.upperAlgorithm ?? "", digest: r.upperDigest ?? "" },
    };
  }
  return { digest: r.digest, path: r.path, upper: { kind: "notRecorded" } };
}

/** An opened snapshot artifact; also the entry points for snapshots. */
export class Snapshot {
  readonly #native: NativeSnapshot;
  readonly #config: NativeConfig;

  /** @internal */
  constructor(inner: NativeSnapshot, config: NativeConfig) {
    this.#native = inner;
    this.#config = config;
  }

  /** Begin configuring a snapshot of the stopped sandbox `sourceSandbox`. */
  static builder(sourceSandbox: string): SnapshotBuilder {
    return new SnapshotBuilder(sourceSandbox);
  }

  /** Open an artifact by bare name, digest or path (metadata checks only). */
  static async open(pathOrName: string): Promise<Snapshot> {
    const config = nativeConfig();
    return new Snapshot(await wrap(native.snapshotOpen(config, pathOrName)), config);
  }

  /** The indexed snapshot with this name, digest or path. */
  static async get(nameOrDigest: string): Promise<SnapshotHandle> {
    const config = nativeConfig();
    const h = await wrap(native.snapshotGet(config, nameOrDigest));
    return SnapshotHandle.live(h, config);
  }

  /** Every indexed snapshot, newest first (read-only handles). */
  static async list(): Promise<SnapshotHandle[]> {
    const table = await wrap(native.snapshotList(nativeConfig()));
    const out = new Array<SnapshotHandle>(table.count);
    for (let i = 0; i < table.count; i++) out[i] = new SnapshotHandle(table, i, null, null);
    return out;
  }

  /** The valid artifacts directly inside `dir`; never touches the index. */
  static async listDir(dir: string): Promise<Snapshot[]> {
    const config = nativeConfig();
    const list = await wrap(native.snapshotListDir(config, dir));
    return list.map((s) => new Snapshot(s, config));
  }

  /** Remove an artifact and its index row (`SnapshotHasChildren` unless `force`). */
  static async remove(pathOrName: string, opts?: { force?: boolean }): Promise<void> {
    await wrap(native.snapshotRemove(nativeConfig(), pathOrName, opts?.force ?? false));
  }

  /** Delete the named snapshot (`remove` without `force`). */
  static async delete(name: string): Promise<void> {
    await wrap(native.snapshotDelete(nativeConfig(), name));
  }

  /** Rebuild the index from `dir` (default: the snapshots directory). */
  static async reindex(dir?: string, opts?: CallOptions): Promise<number> {
    const config = nativeConfig();
    return cancellable(opts?.signal, (token) => native.snapshotReindex(config, dir, token));
  }

  /** Bundle a snapshot into a `.tar.zst` (or plain `.tar`) archive. */
  static async export(nameOrPath: string, out: string, opts?: ExportOpts & ProgressOptions): Promise<void> {
    const config = nativeConfig();
    await cancellable(opts?.signal, (token) =>
      native.snapshotExport(
        config,
        nameOrPath,
        out,
        opts?.withParents ?? false,
        opts?.withImage ?? false,
        opts?.plainTar ?? false,
        token,
        progressFn(opts?.onProgress),
      ),
    );
  }

  /** Unpack an archive into `dest` (default: the snapshots directory) and index it. */
  static async import(archive: string, dest?: string, opts?: ProgressOptions): Promise<SnapshotHandle> {
    const config = nativeConfig();
    const h = await cancellable(opts?.signal, (token) =>
      native.snapshotImport(config, archive, dest, token, progressFn(opts?.onProgress)),
    );
    return SnapshotHandle.live(h, config);
  }

  /**
   * Push a snapshot (name, digest or path) to a registry `reference`
   * (`host:5000/snaps/base:1`) as an OCI artifact; resolves to the
   * artifact's manifest digest. Pushing the same snapshot again uploads
   * nothing and gives the same digest. Progress: `export`, then `push`.
   */
  static async push(nameOrPath: string, reference: string, opts?: ProgressOptions): Promise<string> {
    const config = nativeConfig();
    return cancellable(opts?.signal, (token) =>
      native.snapshotPush(config, nameOrPath, reference, token, progressFn(opts?.onProgress)),
    );
  }

  /**
   * Pull the snapshot artifact `reference` and import it into `dest`
   * (default: the snapshots directory) with every check `import` makes.
   * Progress: `pull`, then `import`.
   */
  static async pull(reference: string, opts?: PullOpts & ProgressOptions): Promise<SnapshotHandle> {
    const config = nativeConfig();
    const h = await cancellable(opts?.signal, (token) =>
      native.snapshotPull(config, reference, opts?.dest, token, progressFn(opts?.onProgress)),
    );
    return SnapshotHandle.live(h, config);
  }

  /** Artifact directory. */
  get path(): string {
    return this.#native.path;
  }
  /** Canonical content digest (`sha256:…`), the snapshot's identity. */
  get digest(): string {
    return this.#native.digest;
  }
  /** Apparent size of the upper layer in bytes. */
  get sizeBytes(): bigint {
    return this.#native.sizeBytes;
  }
  /** Source image reference. */
  get imageRef(): string {
    return this.#native.imageRef;
  }
  /** Pinned OCI manifest digest of the image. */
  get imageManifestDigest(): string {
    return this.#native.imageManifestDigest;
  }
  /** On-disk format of the upper layer. */
  get format(): "raw" | "qcow2" {
    return this.#native.format as "raw" | "qcow2";
  }
  /** Filesystem inside the upper (e.g. `ext4`). */
  get fstype(): string {
    return this.#native.fstype;
  }
  /** Parent digest, or null for a root. */
  get parent(): string | null {
    return this.#native.parent ?? null;
  }
  /** RFC 3339 creation time. */
  get createdAt(): string {
    return this.#native.createdAt;
  }
  /** User labels as `[key, value]` pairs sorted by key. */
  get labels(): ReadonlyArray<readonly [string, string]> {
    return this.#native.labels.map(([k, v]) => [k!, v!] as const);
  }
  /** Recorded source sandbox, or null. */
  get sourceSandbox(): string | null {
    return this.#native.sourceSandbox ?? null;
  }

  /** `full` (the whole VM; restoring forks) or `disk` (restoring boots cold). */
  get kind(): SnapshotKind {
    return this.#native.kind as SnapshotKind;
  }
  /** A full snapshot's VM half (`vm.json`), or null for a disk snapshot. */
  get vm(): VmSection | null {
    const json = this.#native.vmJson;
    return json === null || json === undefined ? null : vmSection(json);
  }

  /**
   * A new running sandbox `name` from this snapshot: a full snapshot forks
   * (continues where it was captured, no boot, with its own hostname,
   * clock and entropy); a disk snapshot boots cold. Aborting
   * `opts.signal` kills the half-started VM and removes the sandbox.
   */
  async restore(name: string, opts?: CallOptions): Promise<Sandbox> {
    return restoreWith(this.#config, (c, spec, token) => this.#native.restore(c, name, spec, token), undefined, opts);
  }

  /** `restore()` with overrides: `snap.restoreWith(name, b => b.memoryMib(128).cpus(1).env(k, v))`. */
  async restoreWith(name: string, f: (b: RestoreBuilder) => RestoreBuilder, opts?: CallOptions): Promise<Sandbox> {
    return restoreWith(this.#config, (c, spec, token) => this.#native.restore(c, name, spec, token), f, opts);
  }

  /** Keep this snapshot under the bare `name` in the snapshots directory (durable, indexed), so it outlives its source. */
  async saveNamed(name: string): Promise<void> {
    await wrap(this.#native.saveNamed(this.#config, name));
  }

  /** Recompute the upper's content hash and compare it with the manifest. */
  async verify(opts?: ProgressOptions): Promise<SnapshotVerifyReport> {
    const r = await cancellable(opts?.signal, (token) =>
      this.#native.verify(this.#config, token, progressFn(opts?.onProgress)),
    );
    return report(r);
  }

  toJSON(): object {
    return {
      path: this.path,
      digest: this.digest,
      sizeBytes: this.sizeBytes.toString(),
      imageRef: this.imageRef,
      imageManifestDigest: this.imageManifestDigest,
      format: this.format,
      fstype: this.fstype,
      parent: this.parent,
      createdAt: this.createdAt,
      labels: this.labels,
      sourceSandbox: this.sourceSandbox,
      kind: this.kind,
      vm: this.vm === null ? null : { ...this.vm, state: fileJSON(this.vm.state), ram: fileJSON(this.vm.ram) },
    };
  }
}

function fileJSON(f: VmFile): object {
  return { ...f, sizeBytes: f.sizeBytes.toString() };
}

/** Configures a new snapshot; exactly one of `.name()` / `.path()`. */
export class SnapshotBuilder {
  #sourceSandbox: string;
  #name: string | undefined;
  #path: string | undefined;
  #labels: Array<readonly [string, string]> = [];
  #force = false;
  #recordIntegrity = false;

  /** @internal */
  constructor(sourceSandbox: string) {
    this.#sourceSandbox = sourceSandbox;
  }

  /** Bare name under the default snapshots directory. */
  name(name: string): this {
    this.#name = name;
    return this;
  }
  /** Explicit artifact directory path. */
  path(path: string): this {
    this.#path = path;
    return this;
  }
  /** Add a label (may be repeated). */
  label(key: string, value: string): this {
    this.#labels.push([key, value]);
    return this;
  }
  /** Overwrite an existing artifact at the destination. */
  force(): this {
    this.#force = true;
    return this;
  }
  /** Compute and record a content-integrity hash at creation. */
  recordIntegrity(): this {
    this.#recordIntegrity = true;
    return this;
  }
  /** The accumulated configuration (checked by the core at `create()`). */
  build(): SnapshotConfig {
    return {
      sourceSandbox: this.#sourceSandbox,
      ...(this.#name !== undefined ? { name: this.#name } : {}),
      ...(this.#path !== undefined ? { path: this.#path } : {}),
      labels: [...this.#labels],
      force: this.#force,
      recordIntegrity: this.#recordIntegrity,
    };
  }
  /** Capture the stopped sandbox's disk. */
  async create(opts?: CallOptions): Promise<Snapshot> {
    const c = this.build();
    const config = nativeConfig();
    const spec = {
      sourceSandbox: c.sourceSandbox,
      ...(c.name !== undefined ? { name: c.name } : {}),
      ...(c.path !== undefined ? { path: c.path } : {}),
      labels: c.labels.map(([k, v]) => [k, v]),
      force: c.force,
      recordIntegrity: c.recordIntegrity,
    };
    const s = await cancellable(opts?.signal, (token) => native.snapshotCreate(config, spec, token));
    return new Snapshot(s, config);
  }
}

/** Thrown by `open()`/`remove()` of a read-only handle (from `Snapshot.list()`). */
export class ReadOnlyHandleError extends InvalidConfigError {
  constructor(digest: string) {
    super(
      `snapshot handle ${digest} came from Snapshot.list() and is read-only; fetch a live handle with Snapshot.get() first`,
    );
  }
}

/** Field `field` (0 digest, 1 name, 2 parent, 3 image ref, 4 path) of row `row`. */
function text(t: NativeHandleTable, row: number, field: number): string {
  const k = row * 5 + field;
  return t.text.slice(k === 0 ? 0 : t.ends[k - 1]!, t.ends[k]!);
}

/**
 * A snapshot as the local index records it. A live handle (from
 * `Snapshot.get()`, `Snapshot.import()`) reads its fields from the native
 * handle; a read-only one (from `Snapshot.list()`) from the table the addon
 * returned, when asked: a list of 10,000 crosses the boundary as one table.
 */
export class SnapshotHandle {
  readonly #table: NativeHandleTable | null;
  readonly #row: number;
  readonly #live: NativeSnapshotHandle | null;
  readonly #config: NativeConfig | null;

  /** @internal */
  constructor(table: NativeHandleTable | null, row: number, live: NativeSnapshotHandle | null, config: NativeConfig | null) {
    this.#table = table;
    this.#row = row;
    this.#live = live;
    this.#config = config;
  }

  /** @internal A live handle. */
  static live(h: NativeSnapshotHandle, config: NativeConfig): SnapshotHandle {
    return new SnapshotHandle(null, 0, h, config);
  }

  #flag(bit: number): boolean {
    return (this.#table!.flags[this.#row]! & bit) !== 0;
  }

  /** Manifest digest (`sha256:…`). */
  get digest(): string {
    return this.#live ? this.#live.digest : text(this.#table!, this.#row, 0);
  }
  /** Bare name, or null. */
  get name(): string | null {
    if (this.#live) return this.#live.name ?? null;
    return this.#flag(1) ? text(this.#table!, this.#row, 1) : null;
  }
  /** Parent digest, or null (null today). */
  get parentDigest(): string | null {
    if (this.#live) return this.#live.parentDigest ?? null;
    return this.#flag(2) ? text(this.#table!, this.#row, 2) : null;
  }
  /** Source image reference. */
  get imageRef(): string {
    return this.#live ? this.#live.imageRef : text(this.#table!, this.#row, 3);
  }
  /** On-disk format of the upper. */
  get format(): "raw" | "qcow2" {
    if (this.#live) return this.#live.format as "raw" | "qcow2";
    return this.#flag(8) ? "qcow2" : "raw";
  }
  /** Apparent upper size at index time, or null. */
  get sizeBytes(): bigint | null {
    if (this.#live) return this.#live.sizeBytes ?? null;
    return this.#flag(4) ? this.#table!.sizes[this.#row]! : null;
  }
  /** Creation time (from the manifest). */
  get createdAt(): Date {
    return new Date(this.#live ? this.#live.createdAtMs : this.#table!.createdAtMs[this.#row]!);
  }
  /** Local artifact directory. */
  get path(): string {
    return this.#live ? this.#live.path : text(this.#table!, this.#row, 4);
  }
  /** `full` or `disk`. */
  get kind(): SnapshotKind {
    if (this.#live) return this.#live.kind as SnapshotKind;
    return this.#flag(16) ? "full" : "disk";
  }
  /** Whether this handle came from `Snapshot.list()` (then it cannot open, remove or restore). */
  get readOnly(): boolean {
    return this.#live === null;
  }

  /** Open and metadata-validate the artifact. Throws on a read-only handle. */
  async open(): Promise<Snapshot> {
    if (this.#live === null || this.#config === null) throw new ReadOnlyHandleError(this.digest);
    const config = this.#config;
    return new Snapshot(await wrap(this.#live.open(config)), config);
  }

  /** Open the artifact and `restore()` it as the new sandbox `name`. Throws on a read-only handle. */
  async restore(name: string, opts?: CallOptions): Promise<Sandbox> {
    return this.restoreWith(name, (b) => b, opts);
  }

  /** Open the artifact and `restoreWith()` it. Throws on a read-only handle. */
  async restoreWith(name: string, f: (b: RestoreBuilder) => RestoreBuilder, opts?: CallOptions): Promise<Sandbox> {
    const live = this.#live;
    if (live === null || this.#config === null) throw new ReadOnlyHandleError(this.digest);
    return restoreWith(this.#config, (c, spec, token) => live.restore(c, name, spec, token), f, opts);
  }

  /** Remove the artifact and its index row. Throws on a read-only handle. */
  async remove(opts?: { force?: boolean }): Promise<void> {
    if (this.#live === null || this.#config === null) throw new ReadOnlyHandleError(this.digest);
    await wrap(this.#live.remove(this.#config, opts?.force ?? false));
  }

  toJSON(): object {
    return {
      digest: this.digest,
      name: this.name,
      parentDigest: this.parentDigest,
      imageRef: this.imageRef,
      format: this.format,
      sizeBytes: this.sizeBytes?.toString() ?? null,
      createdAt: this.createdAt.toISOString(),
      path: this.path,
      kind: this.kind,
    };
  }
}


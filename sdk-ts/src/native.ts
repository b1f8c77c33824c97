/**
 * Loads the native addon: the platform package `microsandbox-linux-x64-gnu`
 * (what users install), else the local build in a checkout
 * (`npm/linux-x64-gnu/`, where `make test-ts` puts it). Declares the
 * addon's shape; only this package's modules use it.
 */

import * as path from "node:path";

/** Configuration passed to every native call (unset fields fall back). */
export interface NativeConfig {
  home?: string;
  guestAssetsDir?: string;
  accel?: string;
}

export interface NativeProgressEvent {
  phase: string;
  doneBytes: bigint;
  totalBytes: bigint;
}

export type NativeProgressFn = (event: NativeProgressEvent | null) => void;

export interface CancelToken {
  cancel(): void;
}

export interface NativeVerifyReport {
  digest: string;
  path: string;
  upperKind: string;
  upperAlgorithm?: string | null;
  upperDigest?: string | null;
}

export interface NativeSnapshot {
  readonly path: string;
  readonly digest: string;
  readonly sizeBytes: bigint;
  readonly imageRef: string;
  readonly imageManifestDigest: string;
  readonly format: string;
  readonly fstype: string;
  readonly parent: string | null;
  readonly createdAt: string;
  readonly labels: string[][];
  readonly sourceSandbox: string | null;
  readonly kind: string;
  /** A full snapshot's `vm.json`, or null. */
  readonly vmJson: string | null;
  restore(config: NativeConfig | undefined, name: string, spec: NativeRestoreSpec | undefined, cancel: CancelToken | undefined): Promise<NativeSandbox>;
  saveNamed(config: NativeConfig | undefined, name: string): Promise<void>;
  verify(
    config: NativeConfig | undefined,
    cancel: CancelToken | undefined,
    progress: NativeProgressFn | undefined,
  ): Promise<NativeVerifyReport>;
}

/** Index rows as one table (see `NativeHandleTable` in the addon). */
export interface NativeHandleTable {
  count: number;
  /** Digest, name, parent digest, image reference and path of each row, concatenated. */
  text: string;
  /** End of each of those five fields per row, in UTF-16 units of `text`. */
  ends: Uint32Array;
  /** Bit 0: has a name; 1: has a parent; 2: has a size; 3: format qcow2; 4: kind full. */
  flags: Uint8Array;
  sizes: BigUint64Array;
  createdAtMs: Float64Array;
}

export interface NativeSnapshotHandle {
  readonly digest: string;
  readonly name: string | null;
  readonly parentDigest: string | null;
  readonly imageRef: string;
  readonly format: string;
  readonly sizeBytes: bigint | null;
  readonly createdAtMs: number;
  readonly path: string;
  readonly kind: string;
  restore(config: NativeConfig | undefined, name: string, spec: NativeRestoreSpec | undefined, cancel: CancelToken | undefined): Promise<NativeSandbox>;
  open(config: NativeConfig | undefined): Promise<NativeSnapshot>;
  remove(config: NativeConfig | undefined, force: boolean): Promise<void>;
}

/** The overrides of `restoreWith` (and the same settings of a new sandbox). */
export interface NativeRestoreSpec {
  memoryMib?: number;
  cpus?: number;
  env: string[][];
}

export interface NativeExecOptions {
  env?: string[][];
  cwd?: string;
  timeoutMs?: number;
  outputLimit?: bigint;
}

export interface NativeExecOutput {
  exitCode: number;
  signal?: number | null;
  timedOut: boolean;
  stdout: Buffer;
  stderr: Buffer;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
}

export interface NativeExecEvent {
  type: string;
  data?: Buffer | null;
  code?: number | null;
  signal?: number | null;
  timedOut?: boolean | null;
}

export interface NativeExecStream {
  next(): Promise<NativeExecEvent | null>;
  writeStdin(data: Buffer): Promise<void>;
  closeStdin(): Promise<void>;
  signal(signal: number): void;
}

export interface NativeSandbox {
  readonly name: string;
  readonly state: string;
  readonly imageRef: string;
  readonly createdAt: string;
  readonly path: string;
  status(config: NativeConfig | undefined): Promise<string>;
  exec(
    config: NativeConfig | undefined,
    cmd: string,
    args: string[],
    opts: NativeExecOptions | undefined,
    cancel: CancelToken | undefined,
  ): Promise<NativeExecOutput>;
  execStream(
    config: NativeConfig | undefined,
    cmd: string,
    args: string[],
    opts: NativeExecOptions | undefined,
    cancel: CancelToken | undefined,
  ): Promise<NativeExecStream>;
  stop(config: NativeConfig | undefined): Promise<void>;
  start(config: NativeConfig | undefined, cancel: CancelToken | undefined): Promise<NativeSandbox>;
  remove(config: NativeConfig | undefined): Promise<void>;
  snapshot(config: NativeConfig | undefined, name: string, cancel: CancelToken | undefined): Promise<NativeSnapshot>;
  snapshotTo(config: NativeConfig | undefined, path: string, cancel: CancelToken | undefined): Promise<NativeSnapshot>;
  snapshotFull(config: NativeConfig | undefined, cancel: CancelToken | undefined): Promise<NativeSnapshot>;
  resume(config: NativeConfig | undefined): Promise<void>;
}

export interface NativeSnapshotSpec {
  sourceSandbox: string;
  name?: string;
  path?: string;
  labels: string[][];
  force: boolean;
  recordIntegrity: boolean;
}

export interface NativeSandboxSpec extends NativeRestoreSpec {
  name: string;
  image?: string;
  fromSnapshot?: string;
  upperSizeBytes?: bigint;
  instant?: boolean;
  network?: string;
  allow: string[];
  ports: Array<{ host: number; guest: number }>;
}

export interface NativeImageInfo {
  reference: string;
  manifestDigest: string;
  configDigest: string;
  lowerPath: string;
  env: string[];
  workingDir: string;
  loadedAt: string;
  origin?: string | null;
}

type C = NativeConfig | undefined;
type T = CancelToken | undefined;
type P = NativeProgressFn | undefined;

export interface NativeAddon {
  CancelToken: new () => CancelToken;
  kinds(): string[];
  testHookError(kind: string): Promise<void>;
  testHookPanic(): Promise<void>;
  testHookU64(value: bigint): Promise<bigint>;
  snapshotCreate(config: C, spec: NativeSnapshotSpec, cancel: T): Promise<NativeSnapshot>;
  snapshotOpen(config: C, pathOrName: string): Promise<NativeSnapshot>;
  snapshotGet(config: C, nameOrDigest: string): Promise<NativeSnapshotHandle>;
  snapshotList(config: C): Promise<NativeHandleTable>;
  snapshotListDir(config: C, dir: string): Promise<NativeSnapshot[]>;
  snapshotRemove(config: C, pathOrName: string, force: boolean): Promise<void>;
  snapshotDelete(config: C, name: string): Promise<void>;
  snapshotReindex(config: C, dir: string | undefined, cancel: T): Promise<number>;
  snapshotExport(
    config: C,
    nameOrPath: string,
    out: string,
    withParents: boolean,
    withImage: boolean,
    plainTar: boolean,
    cancel: T,
    progress: P,
  ): Promise<void>;
  snapshotImport(config: C, archive: string, dest: string | undefined, cancel: T, progress: P): Promise<NativeSnapshotHandle>;
  snapshotPush(config: C, nameOrPath: string, reference: string, cancel: T, progress: P): Promise<string>;
  snapshotPull(config: C, reference: string, dest: string | undefined, cancel: T, progress: P): Promise<NativeSnapshotHandle>;
  sandboxCreate(config: C, spec: NativeSandboxSpec, cancel: T): Promise<NativeSandbox>;
  sandboxGet(config: C, name: string): Promise<NativeSandbox>;
  sandboxList(config: C): Promise<NativeSandbox[]>;
  sandboxRemove(config: C, name: string): Promise<void>;
  imageLoad(config: C, archive: string, reference: string | undefined, cancel: T, progress: P): Promise<NativeImageInfo>;
  imageBuildBusybox(out: string, reference: string | undefined, busybox: string | undefined): Promise<void>;
  imagePull(config: C, reference: string, cancel: T, progress: P): Promise<NativeImageInfo>;
  normaliseReference(reference: string): string;
  imagePush(config: C, referenceOrDigest: string, target: string, cancel: T, progress: P): Promise<string>;
  imageSave(config: C, referenceOrDigest: string, out: string, cancel: T, progress: P): Promise<void>;
  imageRemove(config: C, referenceOrDigest: string): Promise<void>;
  imageGet(config: C, reference: string): Promise<NativeImageInfo>;
  imageList(config: C): Promise<NativeImageInfo[]>;
}

/** The platform package's name for this host. */
export const PLATFORM_PACKAGE = "microsandbox-linux-x64-gnu";

function load(): NativeAddon {
  if (process.platform !== "linux" || process.arch !== "x64") {
    throw new Error(`microsandbox: no native addon for ${process.platform}-${process.arch} (only linux-x64-gnu is built)`);
  }
  const errors: string[] = [];
  for (const candidate of [
    PLATFORM_PACKAGE,
    path.join(__dirname, "..", "npm", "linux-x64-gnu", "microsandbox.linux-x64-gnu.node"),
  ]) {
    try {
      return require(candidate) as NativeAddon;
    } catch (err) {
      errors.push(`${candidate}: ${(err as Error).message}`);
    }
  }
  throw new Error(`microsandbox: cannot load the native addon (install ${PLATFORM_PACKAGE}):\n  ${errors.join("\n  ")}`);
}

/** The addon, loaded once. */
export const native: NativeAddon = load();

/**
 * microsandbox: run untrusted code in microVM sandboxes, snapshot their
 * disks or whole VMs, and fork running sandboxes from full snapshots. The public API of the npm package; every call runs in the Rust
 * core through the native addon, off the JS thread.
 */

import { wrap } from "./control";
import { native } from "./native";

export { configure, currentConfig, withConfig, type Config } from "./config";
export type { CallOptions, ProgressEvent, ProgressOptions } from "./control";
export * from "./errors";
export { Image, normaliseReference, type ImageInfo } from "./image";
export {
  ExecProcess,
  Sandbox,
  SandboxBuilder,
  SandboxHandle,
  type BufferedExecOptions,
  type ExecEvent,
  type ExecOptions,
  type ExecOutput,
  type ExitStatus,
  type NetworkPolicy,
  type SandboxState,
} from "./sandbox";
export { GuestSettings } from "./settings";
export {
  ReadOnlyHandleError,
  RestoreBuilder,
  Snapshot,
  SnapshotBuilder,
  SnapshotHandle,
  type ExportOpts,
  type PullOpts,
  type SnapshotConfig,
  type SnapshotKind,
  type SnapshotVerifyReport,
  type VmFile,
  type VmSection,
} from "./snapshot";

/** Every error kind of the core, from the native library (in its order). */
export function kinds(): string[] {
  return native.kinds();
}

/**
 * Hooks for the SDK's own tests: reject with a core error of `kind`
 * (through the same conversion as real errors), panic inside the native
 * code, or pass a u64 through the BigInt conversion both ways.
 */
export const testHooks = {
  error: (kind: string): Promise<void> => wrap(native.testHookError(kind)),
  panic: (): Promise<void> => wrap(native.testHookPanic()),
  u64: (value: bigint): Promise<bigint> => wrap(native.testHookU64(value)),
};

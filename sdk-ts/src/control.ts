/**
 * Running one native call: the `AbortSignal` fires a native cancel token
 * (the core's `CancellationToken`), progress events become `ProgressEvent`s,
 * rejections become `MicrosandboxError` subclasses.
 */

import { CancelledError, InvalidConfigError, toMicrosandboxError } from "./errors";
import { native, type CancelToken, type NativeProgressEvent, type NativeProgressFn } from "./native";

/** Options every long call accepts. */
export interface CallOptions {
  /** Cancels the call; it rejects with `CancelledError` (`name` `AbortError`). */
  signal?: AbortSignal;
}

/** One progress report: `doneBytes` of `totalBytes` are finished. */
export interface ProgressEvent {
  /** `hash` (verify), `export`, `import`, `load` (image load), `pull` or `push` (registry). */
  readonly phase: "hash" | "export" | "import" | "load" | "pull" | "push";
  readonly doneBytes: bigint;
  readonly totalBytes: bigint;
}

/** Options of the calls that report progress. */
export interface ProgressOptions extends CallOptions {
  /** Receives the events in order, the last one at the total. */
  onProgress?: (event: ProgressEvent) => void;
}

/** The addon's progress callback for `onProgress` (drops the flush marker). */
export function progressFn(onProgress: ((event: ProgressEvent) => void) | undefined): NativeProgressFn | undefined {
  if (onProgress === undefined) return undefined;
  return (event: NativeProgressEvent | null) => {
    if (event !== null) {
      onProgress({
        phase: event.phase as ProgressEvent["phase"],
        doneBytes: event.doneBytes,
        totalBytes: event.totalBytes,
      });
    }
  };
}

function rethrow(err: unknown): never {
  throw toMicrosandboxError(err);
}

/** Map a rejection of the addon to the SDK's error classes (no extra async frame: small calls are hot). */
export function wrap<R>(call: Promise<R>): Promise<R> {
  return call.then(undefined, rethrow);
}

/**
 * Run `call` with a cancel token wired to `signal`: an already-aborted
 * signal rejects at once; aborting later fires the token, and the call
 * rejects with `CancelledError` once the core has cleaned up.
 */
export async function cancellable<R>(
  signal: AbortSignal | undefined,
  call: (token: CancelToken | undefined) => Promise<R>,
): Promise<R> {
  if (signal === undefined) return wrap(call(undefined));
  if (signal.aborted) throw new CancelledError(undefined, { cause: signal.reason });
  const token = new native.CancelToken();
  const onAbort = () => token.cancel();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    return await wrap(call(token));
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/** `value` as an exact u64 argument (a bigint; the addon rejects lossy ones). */
export function u64(value: bigint | number, what: string): bigint {
  if (typeof value === "bigint") return value;
  if (Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  throw new InvalidConfigError(`${what} must be a bigint or a safe non-negative integer, got ${value}`);
}

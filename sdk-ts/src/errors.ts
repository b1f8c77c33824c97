/**
 * The error classes: `MicrosandboxError` and one subclass per kind of the
 * core's `KINDS` list, `.code` equal to the kind. Native errors carry the
 * kind as their `code` (set by the addon, never parsed out of a message);
 * `toMicrosandboxError` picks the subclass.
 */

/** Every error the SDK throws. `code` is the core's stable kind string. */
export class MicrosandboxError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

function kind<K extends string>(code: K) {
  return class extends MicrosandboxError {
    declare readonly code: K;
    constructor(message: string, options?: { cause?: unknown }) {
      super(code, message, options);
    }
  };
}

/** A snapshot destination exists and `force` was not set. */
export class SnapshotAlreadyExistsError extends kind("SnapshotAlreadyExists") {}
/** No artifact or index entry matches. */
export class SnapshotNotFoundError extends kind("SnapshotNotFound") {}
/** A snapshot was requested of a running sandbox. */
export class SnapshotSandboxRunningError extends kind("SnapshotSandboxRunning") {}
/** The artifact's content disagrees with its manifest. */
export class SnapshotIntegrityError extends kind("SnapshotIntegrity") {}
/** The manifest is unparseable or breaks a rule. */
export class ManifestInvalidError extends kind("ManifestInvalid") {}
/** The manifest names an integrity algorithm this build lacks. */
export class IntegrityAlgorithmUnsupportedError extends kind("IntegrityAlgorithmUnsupported") {}
/** A snapshot archive is malformed, truncated or hostile. */
export class ArchiveInvalidError extends kind("ArchiveInvalid") {}
/** The snapshot has indexed children and `force` was not set. */
export class SnapshotHasChildrenError extends kind("SnapshotHasChildren") {}
/** The configuration or an argument is incomplete or contradictory. */
export class InvalidConfigError extends kind("InvalidConfig") {}
/** No sandbox has that name. */
export class SandboxNotFoundError extends kind("SandboxNotFound") {}
/** A sandbox with that name exists. */
export class SandboxAlreadyExistsError extends kind("SandboxAlreadyExists") {}
/** The sandbox is not running. */
export class SandboxNotRunningError extends kind("SandboxNotRunning") {}
/** `resume()` of a sandbox that is not paused. */
export class SandboxNotPausedError extends kind("SandboxNotPaused") {}
/** A full snapshot's saved VM state cannot run here (QEMU, accelerator, CPU model, devices or guest protocol differ). */
export class SnapshotIncompatibleError extends kind("SnapshotIncompatible") {}
/** No image matches. */
export class ImageNotFoundError extends kind("ImageNotFound") {}
/** An image a snapshot or sandbox needs (and no other reference keeps) cannot be removed. */
export class ImageInUseError extends kind("ImageInUse") {}
/** A registry could not give an image or snapshot (connection, credentials, or content that breaks a rule). */
export class RegistryError extends kind("Registry") {}
/** The VM or its tooling failed (also: a panic in the native code). */
export class RuntimeError extends kind("Runtime") {}
/** A filesystem or OS call failed. */
export class IoError extends kind("Io") {}

/**
 * The call was cancelled (its `AbortSignal` fired) and what it staged was
 * removed. AbortError-style: `name === "AbortError"`.
 */
export class CancelledError extends kind("Cancelled") {
  constructor(message = "the operation was cancelled", options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AbortError";
  }
}

type ErrorClass = new (message: string, options?: { cause?: unknown }) => MicrosandboxError;

/** The subclass of each kind. */
export const ERROR_CLASSES: Readonly<Record<string, ErrorClass>> = Object.freeze({
  SnapshotAlreadyExists: SnapshotAlreadyExistsError,
  SnapshotNotFound: SnapshotNotFoundError,
  SnapshotSandboxRunning: SnapshotSandboxRunningError,
  SnapshotIntegrity: SnapshotIntegrityError,
  ManifestInvalid: ManifestInvalidError,
  IntegrityAlgorithmUnsupported: IntegrityAlgorithmUnsupportedError,
  ArchiveInvalid: ArchiveInvalidError,
  SnapshotHasChildren: SnapshotHasChildrenError,
  InvalidConfig: InvalidConfigError,
  SandboxNotFound: SandboxNotFoundError,
  SandboxAlreadyExists: SandboxAlreadyExistsError,
  SandboxNotRunning: SandboxNotRunningError,
  SandboxNotPaused: SandboxNotPausedError,
  SnapshotIncompatible: SnapshotIncompatibleError,
  ImageNotFound: ImageNotFoundError,
  ImageInUse: ImageInUseError,
  Registry: RegistryError,
  Runtime: RuntimeError,
  Cancelled: CancelledError,
  Io: IoError,
});

/**
 * The SDK error for a rejection of the addon: the subclass of its `code`.
 * A code the core added after this package was built stays a
 * `MicrosandboxError` with that code; an argument napi itself refused
 * (wrong JS type) is `InvalidConfig`; napi's `GenericFailure` (a panic
 * caught in a synchronous native call) is `Runtime`.
 */
export function toMicrosandboxError(err: unknown): unknown {
  if (err instanceof MicrosandboxError || !(err instanceof Error)) {
    return err;
  }
  const code = (err as Error & { code?: unknown }).code;
  if (typeof code !== "string") {
    return err;
  }
  const cls = ERROR_CLASSES[code];
  if (cls) {
    return new cls(err.message, { cause: err });
  }
  if (code === "GenericFailure") {
    // napi's own failures, e.g. a panic caught in a synchronous native call.
    return new RuntimeError(err.message, { cause: err });
  }
  if (code === "InvalidArg" || code === "NumberExpected" || code === "StringExpected" || code === "BigintExpected" || code === "ObjectExpected") {
    return new InvalidConfigError(err.message, { cause: err });
  }
  return new MicrosandboxError(code, err.message, { cause: err });
}

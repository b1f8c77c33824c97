/**
 * Images: load an archive (OCI layout or `docker save`), pull from or push
 * to a registry, save one, remove, build the busybox archive from the host's busybox-static, list
 * and get loaded images; the Docker-style reference normalisation.
 */

import { nativeConfig } from "./config";
import { cancellable, progressFn, wrap, type ProgressOptions } from "./control";
import { toMicrosandboxError } from "./errors";
import { native, type NativeImageInfo } from "./native";

/** A loaded image. */
export interface ImageInfo {
  /** Reference it was loaded under. */
  readonly reference: string;
  /** OCI manifest digest: what snapshots pin. */
  readonly manifestDigest: string;
  /** Config blob digest. */
  readonly configDigest: string;
  /** The read-only root disk. */
  readonly lowerPath: string;
  /** Default environment (`KEY=VALUE`). */
  readonly env: readonly string[];
  /** Default working directory. */
  readonly workingDir: string;
  /** RFC 3339 load or pull time. */
  readonly loadedAt: string;
  /** The registry reference it was pulled from (`null`: loaded from an archive or imported). */
  readonly origin: string | null;
}

function info(i: NativeImageInfo): ImageInfo {
  return { ...i, origin: i.origin ?? null };
}

/**
 * The full form of a Docker-style reference: `python` is
 * `docker.io/library/python:latest`. Throws `InvalidConfigError` for a
 * malformed one.
 */
export function normaliseReference(reference: string): string {
  try {
    return native.normaliseReference(reference);
  } catch (err) {
    throw toMicrosandboxError(err);
  }
}

/** Entry points for images. */
export class Image {
  private constructor() {}

  /** Load an archive; `reference` names it (else the archive's own name). */
  static async load(archive: string, reference?: string, opts?: ProgressOptions): Promise<ImageInfo> {
    const config = nativeConfig();
    return info(
      await cancellable(opts?.signal, (token) =>
        native.imageLoad(config, archive, reference, token, progressFn(opts?.onProgress)),
      ),
    );
  }

  /**
   * Pull `reference` (`python:3.12`, `host:5000/app@sha256:…`) from its
   * registry and build its root disk; registered under the normalised
   * reference, which is its `origin`. Progress: `pull` (bytes downloaded),
   * then `load`. Errors: `ImageNotFoundError`, `RegistryError`,
   * `InvalidConfigError` (malformed reference), `CancelledError`.
   */
  static async pull(reference: string, opts?: ProgressOptions): Promise<ImageInfo> {
    const config = nativeConfig();
    return info(
      await cancellable(opts?.signal, (token) =>
        native.imagePull(config, reference, token, progressFn(opts?.onProgress)),
      ),
    );
  }

  /**
   * Write a tiny busybox OCI archive to `out` from the host's
   * busybox-static (default `/bin/busybox`, reference `local/busybox:latest`).
   */
  static async buildBusybox(out: string, opts?: { reference?: string; busybox?: string }): Promise<void> {
    await wrap(native.imageBuildBusybox(out, opts?.reference, opts?.busybox));
  }

  /**
   * Push the local image `referenceOrDigest` to `target`
   * (`host:5000/app:1`) as the store holds it, so the registry's manifest
   * digest is the local one (the resolved value). Blobs the registry has
   * are not sent again. Progress: `push`.
   */
  static async push(referenceOrDigest: string, target: string, opts?: ProgressOptions): Promise<string> {
    const config = nativeConfig();
    return cancellable(opts?.signal, (token) =>
      native.imagePush(config, referenceOrDigest, target, token, progressFn(opts?.onProgress)),
    );
  }

  /**
   * Write the image to `out` as an OCI archive other tools read (as
   * `docker save` does); `out` is replaced atomically and left as it was on
   * error or abort. Progress: `export`.
   */
  static async save(referenceOrDigest: string, out: string, opts?: ProgressOptions): Promise<void> {
    const config = nativeConfig();
    await cancellable(opts?.signal, (token) =>
      native.imageSave(config, referenceOrDigest, out, token, progressFn(opts?.onProgress)),
    );
  }

  /**
   * Remove the image (a reference: that one; a manifest digest: every
   * reference to it) and the blobs and root disks no other image uses.
   * `ImageInUseError` while a snapshot or sandbox needs it.
   */
  static async remove(referenceOrDigest: string): Promise<void> {
    await wrap(native.imageRemove(nativeConfig(), referenceOrDigest));
  }

  /** The image with this reference or manifest digest. */
  static async get(referenceOrDigest: string): Promise<ImageInfo> {
    return info(await wrap(native.imageGet(nativeConfig(), referenceOrDigest)));
  }

  /** Every loaded image. */
  static async list(): Promise<ImageInfo[]> {
    return (await wrap(native.imageList(nativeConfig()))).map(info);
  }
}

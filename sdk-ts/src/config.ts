/**
 * Configuration: the home directory, the guest assets directory and the
 * accelerator, as a process default (`configure`) and per scope of async
 * work (`withConfig`, on `AsyncLocalStorage`). Each field falls back on its
 * own: innermost scope, outer scopes, process default, then the core's
 * environment fallback (`MSB_HOME`, `MSB_KERNEL_DIR`, `MSB_ACCEL`).
 */

import { AsyncLocalStorage } from "node:async_hooks";
import type { NativeConfig } from "./native";

/** Where the SDK keeps its state and how it runs guests. */
export interface Config {
  /** The home directory (snapshots, sandboxes, images, index). */
  home?: string;
  /** The directory with the guest kernel, modules and init. */
  guestAssetsDir?: string;
  /** The accelerator; `auto` uses KVM only where a probe boot works. */
  accel?: "auto" | "kvm" | "tcg";
}

let processDefault: Config = {};
const scoped = new AsyncLocalStorage<Config>();

function over(top: Config, base: Config): Config {
  return {
    home: top.home ?? base.home,
    guestAssetsDir: top.guestAssetsDir ?? base.guestAssetsDir,
    accel: top.accel ?? base.accel,
  };
}

/** Set the process default configuration (replaces the previous one). */
export function configure(config: Config): void {
  processDefault = { ...config };
}

/**
 * Run `work` with `config` overriding the process default for every SDK
 * call made inside it (including calls in promises it starts). Scopes nest.
 */
export function withConfig<R>(config: Config, work: () => R): R {
  return scoped.run(over(config, scoped.getStore() ?? {}), work);
}

/** The configuration in force here (environment fallbacks not applied). */
export function currentConfig(): Config {
  return over(scoped.getStore() ?? {}, processDefault);
}

/** The configuration in force, as the addon takes it. */
export function nativeConfig(): NativeConfig {
  const c = currentConfig();
  const out: NativeConfig = {};
  if (c.home !== undefined) out.home = c.home;
  if (c.guestAssetsDir !== undefined) out.guestAssetsDir = c.guestAssetsDir;
  if (c.accel !== undefined) out.accel = c.accel;
  return out;
}

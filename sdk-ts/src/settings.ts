/**
 * The guest settings a new sandbox and a restore share — memory, CPUs,
 * environment — collected in call order for the core, which checks them.
 * `SandboxBuilder` and `RestoreBuilder` extend it.
 */

import type { NativeRestoreSpec } from "./native";

/** Memory, CPUs and environment of a sandbox being created or restored. */
export class GuestSettings {
  #memoryMib: number | undefined;
  #cpus: number | undefined;
  #env: Array<[string, string]> = [];

  /** Guest memory in MiB (a new sandbox: default 256; a full restore: at most the snapshot's). */
  memoryMib(mib: number): this {
    this.#memoryMib = mib;
    return this;
  }
  /** Virtual CPUs (a new sandbox: default 1; a full restore: at most the snapshot's). */
  cpus(cpus: number): this {
    this.#cpus = cpus;
    return this;
  }
  /** Set an environment variable for every command. */
  env(key: string, value: string): this {
    this.#env.push([key, value]);
    return this;
  }

  /** @internal The settings as the addon takes them (unset ones left out). */
  protected guestSpec(): NativeRestoreSpec {
    return {
      ...(this.#memoryMib !== undefined ? { memoryMib: this.#memoryMib } : {}),
      ...(this.#cpus !== undefined ? { cpus: this.#cpus } : {}),
      env: this.#env.map(([k, v]) => [k, v]),
    };
  }
}

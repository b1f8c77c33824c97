/**
 * Sandboxes: `Sandbox.builder(name)…create()` (from an image or a
 * snapshot), get, list, remove, and a handle's exec (buffered and
 * streaming), stop, start, status, snapshot (no name: the whole VM; a
 * name: the disk of a stopped sandbox), snapshotTo and resume.
 */

import { Readable, Writable } from "node:stream";
import { nativeConfig } from "./config";
import { cancellable, u64, wrap, type CallOptions } from "./control";
import { InvalidConfigError, toMicrosandboxError } from "./errors";
import {
  native,
  type NativeConfig,
  type NativeExecEvent,
  type NativeExecOptions,
  type NativeExecStream,
  type NativeSandbox,
} from "./native";
import { GuestSettings } from "./settings";
import { Snapshot } from "./snapshot";

/** A sandbox's network policy (`docs/network.md`). */
export type NetworkPolicy = "public" | "all" | "none";

/** A sandbox's state; `paused` after a full snapshot, until `resume()`. */
export type SandboxState = "running" | "paused" | "stopped" | "crashed";

/** Options of one command. */
export interface ExecOptions extends CallOptions {
  /** Environment added to (and overriding) the sandbox's. */
  env?: Record<string, string>;
  /** Working directory (default: the sandbox's). */
  cwd?: string;
  /** SIGKILL the command's process group after this many milliseconds. */
  timeoutMs?: number;
}

/** Options of the buffered `exec`. */
export interface BufferedExecOptions extends ExecOptions {
  /** Keep at most this many bytes of stdout and of stderr each (default 64 MiB). */
  outputLimit?: bigint | number;
}

/** How a command ended. */
export interface ExitStatus {
  /** Exit status, or 128 + signal. */
  readonly code: number;
  /** The signal that killed it, or null. */
  readonly signal: number | null;
  /** The timeout killed it. */
  readonly timedOut: boolean;
}

/** A buffered command's result. */
export interface ExecOutput {
  readonly exitCode: number;
  readonly signal: number | null;
  readonly timedOut: boolean;
  readonly stdout: Buffer;
  readonly stderr: Buffer;
  readonly stdoutTruncated: boolean;
  readonly stderrTruncated: boolean;
  /** Stdout as UTF-8 text (lossy). */
  readonly stdoutText: string;
  /** Stderr as UTF-8 text (lossy). */
  readonly stderrText: string;
}

/** One event of a streaming command. */
export type ExecEvent =
  | { readonly type: "stdout" | "stderr"; readonly data: Buffer }
  | ({ readonly type: "exit" } & ExitStatus);

function tcpPort(value: number, what: string): number {
  if (Number.isInteger(value) && value >= 1 && value <= 65535) return value;
  throw new InvalidConfigError(`${what} port must be an integer between 1 and 65535, got ${value}`);
}

function execOptions(opts: BufferedExecOptions | undefined): NativeExecOptions | undefined {
  if (opts === undefined) return undefined;
  const out: NativeExecOptions = {};
  if (opts.env !== undefined) out.env = Object.entries(opts.env);
  if (opts.cwd !== undefined) out.cwd = opts.cwd;
  if (opts.timeoutMs !== undefined) out.timeoutMs = opts.timeoutMs;
  if (opts.outputLimit !== undefined) out.outputLimit = u64(opts.outputLimit, "outputLimit");
  return out;
}

function event(ev: NativeExecEvent): ExecEvent {
  if (ev.type === "exit") {
    return { type: "exit", code: ev.code ?? 0, signal: ev.signal ?? null, timedOut: ev.timedOut ?? false };
  }
  return { type: ev.type as "stdout" | "stderr", data: ev.data ?? Buffer.alloc(0) };
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGUSR1: 10, SIGUSR2: 12, SIGTERM: 15 };

/**
 * A running command: an async iterator of events, or Node streams
 * (`stdin`, `stdout`, `stderr`; use one or the other), `wait()`, `kill()`.
 */
export class ExecProcess implements AsyncIterable<ExecEvent> {
  readonly #native: NativeExecStream;
  #exit: Promise<ExitStatus> | null = null;
  #resolveExit!: (status: ExitStatus) => void;
  #rejectExit!: (err: unknown) => void;
  #stdin: Writable | null = null;
  #stdout: Readable | null = null;
  #stderr: Readable | null = null;
  #pumping = false;

  /** @internal */
  constructor(inner: NativeExecStream) {
    this.#native = inner;
    this.#exit = new Promise<ExitStatus>((resolve, reject) => {
      this.#resolveExit = resolve;
      this.#rejectExit = reject;
    });
    // wait() may never be called; an unobserved failure must not crash the process.
    this.#exit.catch(() => {});
  }

  /** The next event, or null after the exit. */
  async next(): Promise<ExecEvent | null> {
    let ev: NativeExecEvent | null;
    try {
      ev = await this.#native.next();
    } catch (err) {
      const mapped = toMicrosandboxError(err);
      this.#rejectExit(mapped);
      throw mapped;
    }
    if (ev === null) return null;
    const out = event(ev);
    if (out.type === "exit") this.#resolveExit({ code: out.code, signal: out.signal, timedOut: out.timedOut });
    return out;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ExecEvent> {
    for (;;) {
      const ev = await this.next();
      if (ev === null) return;
      yield ev;
    }
  }

  /** Write to stdin; resolves once the guest took it in (back-pressure). */
  async write(data: Buffer | string): Promise<void> {
    await wrap(this.#native.writeStdin(typeof data === "string" ? Buffer.from(data) : data));
  }

  /** Close stdin: the command reads end of file. */
  async closeStdin(): Promise<void> {
    await wrap(this.#native.closeStdin());
  }

  /** Send a signal (name or number) to the command's process group. */
  kill(signal: NodeJS.Signals | number = "SIGTERM"): void {
    const n = typeof signal === "number" ? signal : SIGNALS[signal];
    if (n === undefined) throw new TypeError(`unsupported signal ${signal}`);
    this.#native.signal(n);
  }

  /**
   * The exit status. Reads (and drops) the remaining output unless the
   * iterator or the streams are consuming it.
   */
  async wait(): Promise<ExitStatus> {
    if (!this.#pumping) {
      this.#pumping = true;
      void this.#drain(null, null);
    }
    return this.#exit!;
  }

  /** Stdin as a Node Writable (each write waits on the guest). */
  get stdin(): Writable {
    if (this.#stdin === null) {
      this.#stdin = new Writable({
        write: (chunk: Buffer, _enc, cb) => {
          this.write(chunk).then(() => cb(), cb);
        },
        final: (cb) => {
          this.closeStdin().then(() => cb(), cb);
        },
      });
    }
    return this.#stdin;
  }

  /** Stdout as a Node Readable (pulls events as it is read). */
  get stdout(): Readable {
    this.#streams();
    return this.#stdout!;
  }

  /** Stderr as a Node Readable. */
  get stderr(): Readable {
    this.#streams();
    return this.#stderr!;
  }

  #streams(): void {
    if (this.#stdout !== null) return;
    let resume: (() => void) | null = null;
    const pull = () => {
      const r = resume;
      resume = null;
      r?.();
    };
    this.#stdout = new Readable({ read: pull });
    this.#stderr = new Readable({ read: pull });
    if (!this.#pumping) {
      this.#pumping = true;
      void this.#drain(this.#stdout, this.#stderr, () => new Promise<void>((r) => (resume = r)));
    }
  }

  /** Pull events until the exit, pushing output into the streams if any. */
  async #drain(stdout: Readable | null, stderr: Readable | null, waitForReader?: () => Promise<void>): Promise<void> {
    try {
      for (;;) {
        const ev = await this.next();
        if (ev === null) break;
        if (ev.type === "exit") continue;
        const target = ev.type === "stdout" ? stdout : stderr;
        if (target !== null && !target.push(ev.data) && waitForReader) await waitForReader();
      }
      stdout?.push(null);
      stderr?.push(null);
    } catch (err) {
      stdout?.destroy(err as Error);
      stderr?.destroy(err as Error);
    }
  }
}

/** A sandbox as the registry records it. */
export class SandboxHandle {
  /** @internal */
  protected readonly native: NativeSandbox;
  /** @internal */
  protected readonly config: NativeConfig;

  /** @internal */
  constructor(inner: NativeSandbox, config: NativeConfig) {
    this.native = inner;
    this.config = config;
  }

  /** The sandbox's name. */
  get name(): string {
    return this.native.name;
  }
  /** State when this handle was read (see `status()`). */
  get state(): SandboxState {
    return this.native.state as SandboxState;
  }
  /** Image reference it was created from. */
  get imageRef(): string {
    return this.native.imageRef;
  }
  /** RFC 3339 creation time. */
  get createdAt(): string {
    return this.native.createdAt;
  }
  /** The sandbox directory. */
  get path(): string {
    return this.native.path;
  }

  /** The current state, checked against the VM. */
  async status(): Promise<SandboxState> {
    return (await wrap(this.native.status(this.config))) as SandboxState;
  }

  /** Run a command and wait for it (stdin is /dev/null). */
  async exec(cmd: string, args: string[] = [], opts?: BufferedExecOptions): Promise<ExecOutput> {
    const nopts = execOptions(opts);
    const out = await cancellable(opts?.signal, (token) => this.native.exec(this.config, cmd, args, nopts, token));
    return {
      exitCode: out.exitCode,
      signal: out.signal ?? null,
      timedOut: out.timedOut,
      stdout: out.stdout,
      stderr: out.stderr,
      stdoutTruncated: out.stdoutTruncated,
      stderrTruncated: out.stderrTruncated,
      stdoutText: out.stdout.toString("utf8"),
      stderrText: out.stderr.toString("utf8"),
    };
  }

  /**
   * Start a command and stream it. Aborting `opts.signal` kills it and
   * makes the pending `next()` reject with `CancelledError`.
   */
  async execStream(cmd: string, args: string[] = [], opts?: ExecOptions): Promise<ExecProcess> {
    const nopts = execOptions(opts);
    const signal = opts?.signal;
    if (signal?.aborted) return cancellable(signal, () => Promise.reject(new Error("unreachable")));
    const token = signal ? new native.CancelToken() : undefined;
    if (signal && token) signal.addEventListener("abort", () => token.cancel(), { once: true });
    const s = await wrap(this.native.execStream(this.config, cmd, args, nopts, token));
    return new ExecProcess(s);
  }

  /** Shut down cleanly (forced after a timeout). */
  async stop(): Promise<void> {
    await wrap(this.native.stop(this.config));
  }

  /** Boot a stopped or crashed sandbox again. */
  async start(opts?: CallOptions): Promise<Sandbox> {
    const sb = await cancellable(opts?.signal, (token) => this.native.start(this.config, token));
    return new Sandbox(sb, this.config);
  }

  /** Stop if running, then delete the sandbox. */
  async remove(): Promise<void> {
    await wrap(this.native.remove(this.config));
  }

  /**
   * Capture the whole running VM (memory, CPU and device state, disk) as a
   * full snapshot. The sandbox stays `paused` until `resume()`; the
   * snapshot lives in the sandbox's directory until `saveNamed()` or until
   * the sandbox is removed. `SandboxNotRunningError` unless it runs.
   * Aborting `opts.signal` resumes the sandbox and leaves nothing behind.
   */
  snapshot(opts?: CallOptions): Promise<Snapshot>;
  /** Snapshot the disk of this stopped sandbox under a bare name. */
  snapshot(name: string, opts?: CallOptions): Promise<Snapshot>;
  async snapshot(nameOrOpts?: string | CallOptions, opts?: CallOptions): Promise<Snapshot> {
    const s =
      typeof nameOrOpts === "string"
        ? await cancellable(opts?.signal, (token) => this.native.snapshot(this.config, nameOrOpts, token))
        : await cancellable(nameOrOpts?.signal, (token) => this.native.snapshotFull(this.config, token));
    return new Snapshot(s, this.config);
  }

  /** Continue a sandbox paused by a full snapshot; `SandboxNotPausedError` otherwise. */
  async resume(): Promise<void> {
    await wrap(this.native.resume(this.config));
  }

  /** Snapshot this stopped sandbox to an explicit path. */
  async snapshotTo(path: string, opts?: CallOptions): Promise<Snapshot> {
    const s = await cancellable(opts?.signal, (token) => this.native.snapshotTo(this.config, path, token));
    return new Snapshot(s, this.config);
  }
}

/** A sandbox (running when created or started); the entry points for sandboxes. */
export class Sandbox extends SandboxHandle {
  /** Start configuring a sandbox called `name`. */
  static builder(name: string): SandboxBuilder {
    return new SandboxBuilder(name);
  }

  /** The sandbox called `name`. */
  static async get(name: string): Promise<SandboxHandle> {
    const config = nativeConfig();
    return new SandboxHandle(await wrap(native.sandboxGet(config, name)), config);
  }

  /** Every sandbox, by name. */
  static async list(): Promise<SandboxHandle[]> {
    const config = nativeConfig();
    return (await wrap(native.sandboxList(config))).map((h) => new SandboxHandle(h, config));
  }

  /** Stop (if running) and delete the sandbox called `name`. */
  static async remove(name: string): Promise<void> {
    await wrap(native.sandboxRemove(nativeConfig(), name));
  }

  /** The registry view of this sandbox. */
  get handle(): SandboxHandle {
    return new SandboxHandle(this.native, this.config);
  }
}

/** Configures a sandbox: exactly one of `.image()` / `.fromSnapshot()`. */
export class SandboxBuilder extends GuestSettings {
  #name: string;
  #image: string | undefined;
  #fromSnapshot: string | undefined;
  #upperSizeBytes: bigint | undefined;
  #instant: boolean | undefined;
  #network: NetworkPolicy | undefined;
  #allow: string[] = [];
  #ports: Array<{ host: number; guest: number }> = [];

  /** @internal */
  constructor(name: string) {
    super();
    this.#name = name;
  }

  /** Boot from this image reference or manifest digest. */
  image(reference: string): this {
    this.#image = reference;
    return this;
  }
  /** Boot from a snapshot (bare name, digest or path); excludes `.image()`. */
  fromSnapshot(pathOrName: string): this {
    this.#fromSnapshot = pathOrName;
    return this;
  }
  /** Apparent size of the upper disk in bytes (default 4 GiB, sparse). */
  upperSizeBytes(bytes: bigint | number): this {
    this.#upperSizeBytes = u64(bytes, "upperSizeBytes");
    return this;
  }

  /**
   * Instant create (the core's default: on): fork a cached base full
   * snapshot of a freshly booted guest of the same shape instead of
   * booting. `false` always boots cold.
   */
  instant(instant: boolean): this {
    this.#instant = instant;
    return this;
  }

  /**
   * Network policy (`docs/network.md`): `"public"` (the default: public
   * addresses only), `"all"` (the host's loopback included) or `"none"`
   * (no network card, only `lo`). Another name fails `create()` with
   * `InvalidConfigError`.
   */
  network(policy: NetworkPolicy): this {
    this.#network = policy;
    return this;
  }
  /** Also allow a host name, address or CIDR (`"10.0.0.0/8"`), whatever the policy's ranges say. Repeatable. */
  allow(hostOrCidr: string): this {
    this.#allow.push(hostOrCidr);
    return this;
  }
  /**
   * Publish guest TCP port `guest` on the host's `127.0.0.1:host`.
   * Repeatable; a taken host port fails `create()` with `InvalidConfigError`
   * before any VM starts.
   */
  port(host: number, guest: number): this {
    this.#ports.push({ host: tcpPort(host, "host"), guest: tcpPort(guest, "guest") });
    return this;
  }

  /** Create the sandbox and boot it; aborting kills the half-booted VM and removes it. */
  async create(opts?: CallOptions): Promise<Sandbox> {
    const config = nativeConfig();
    const spec = {
      name: this.#name,
      ...(this.#image !== undefined ? { image: this.#image } : {}),
      ...(this.#fromSnapshot !== undefined ? { fromSnapshot: this.#fromSnapshot } : {}),
      ...this.guestSpec(),
      ...(this.#upperSizeBytes !== undefined ? { upperSizeBytes: this.#upperSizeBytes } : {}),
      ...(this.#instant !== undefined ? { instant: this.#instant } : {}),
      ...(this.#network !== undefined ? { network: this.#network } : {}),
      allow: [...this.#allow],
      ports: this.#ports.map((p) => ({ ...p })),
    };
    return new Sandbox(await cancellable(opts?.signal, (token) => native.sandboxCreate(config, spec, token)), config);
  }
}

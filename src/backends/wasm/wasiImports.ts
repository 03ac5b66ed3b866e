/**
 * Node's WASI imports with three changes a module running inside the daemon needs:
 * - every call records the module's memory size, which the daemon reads for stats;
 * - fd_close and fd_renumber refuse stdin/stdout/stderr: they are the daemon's fds, and a module
 *   closing one would make the daemon close a number that may have been reused by then;
 * - a poll_oneoff that only waits for clocks (what `sleep` compiles to) sleeps in Atomics.wait,
 *   which Worker.terminate() interrupts; uvwasi's own sleep blocks the thread where no kill reaches it.
 */

export type WasiFunction = (...args: Array<number | bigint>) => number | undefined;
export type WasiNamespace = Record<string, WasiFunction>;

export const WASI_ERRNO = { success: 0, fault: 21, inval: 28, notsup: 58 } as const;

const SUBSCRIPTION_BYTES = 48;
const EVENT_BYTES = 32;
const EVENTTYPE_CLOCK = 0;
const SUBCLOCKFLAGS_ABSTIME = 1;
const CLOCK_REALTIME = 0;
const CLOCK_MONOTONIC = 1;
const CLOCK_THREAD_CPUTIME = 3;
const STDIO_FDS = 3;

export interface ImportContext {
  /** The module's memory once it is instantiated. */
  memory(): WebAssembly.Memory | undefined;
  /** Called after every WASI call. */
  afterCall(): void;
  /** Blocks the calling thread for `ms` milliseconds, interruptibly. */
  sleep(ms: number): void;
}

export function guardedWasiImports(raw: WasiNamespace, context: ImportContext): WasiNamespace {
  const guarded: WasiNamespace = {};
  const call = (name: string, args: Array<number | bigint>): number | undefined => {
    try {
      return raw[name]!(...args);
    } finally {
      context.afterCall();
    }
  };
  for (const name of Object.keys(raw)) guarded[name] = (...args) => call(name, args);
  guarded.fd_close = (fd, ...rest) => (isDaemonFd(fd) ? WASI_ERRNO.notsup : call('fd_close', [fd!, ...rest]));
  guarded.fd_renumber = (from, to) => (isDaemonFd(from) || isDaemonFd(to) ? WASI_ERRNO.notsup : call('fd_renumber', [from!, to!]));
  guarded.poll_oneoff = (...args) => {
    const slept = sleepIfOnlyClocks(context, args);
    return slept ?? call('poll_oneoff', args);
  };
  return guarded;
}

function isDaemonFd(fd: number | bigint | undefined): boolean {
  return Number(fd) < STDIO_FDS;
}

interface ClockSubscription {
  userdata: bigint;
  remainingNs: bigint;
}

/** Handles a poll that waits only for clocks; undefined means "not only clocks: let uvwasi do it". */
export function sleepIfOnlyClocks(context: ImportContext, args: Array<number | bigint>): number | undefined {
  const memory = context.memory();
  const [inPtr, outPtr, count, neventsPtr] = args.map(Number) as [number, number, number, number];
  if (!memory || count === 0) return undefined;
  const view = new DataView(memory.buffer);
  const fits = (ptr: number, bytes: number) => ptr >= 0 && ptr + bytes <= view.byteLength;
  if (!fits(inPtr, count * SUBSCRIPTION_BYTES) || !fits(outPtr, count * EVENT_BYTES) || !fits(neventsPtr, 4)) return WASI_ERRNO.fault;
  const subscriptions: ClockSubscription[] = [];
  for (let i = 0; i < count; i++) {
    const subscription = readClockSubscription(view, inPtr + i * SUBSCRIPTION_BYTES);
    if (!subscription) return undefined;
    subscriptions.push(subscription);
  }
  const waitNs = subscriptions.reduce((shortest, s) => (s.remainingNs < shortest ? s.remainingNs : shortest), subscriptions[0]!.remainingNs);
  context.afterCall();
  if (waitNs > 0n) context.sleep(Number(waitNs) / 1e6);
  const due = subscriptions.filter((s) => s.remainingNs <= waitNs);
  due.forEach((s, i) => writeClockEvent(view, outPtr + i * EVENT_BYTES, s.userdata));
  view.setUint32(neventsPtr, due.length, true);
  return WASI_ERRNO.success;
}

/** subscription: userdata u64 @0, tag u8 @8, clock id u32 @16, timeout u64 @24, precision u64 @32, flags u16 @40. */
function readClockSubscription(view: DataView, at: number): ClockSubscription | undefined {
  if (view.getUint8(at + 8) !== EVENTTYPE_CLOCK) return undefined;
  const clockId = view.getUint32(at + 16, true);
  const timeout = view.getBigUint64(at + 24, true);
  const absolute = (view.getUint16(at + 40, true) & SUBCLOCKFLAGS_ABSTIME) !== 0;
  if (clockId > CLOCK_THREAD_CPUTIME) return undefined;
  if (!absolute) return { userdata: view.getBigUint64(at, true), remainingNs: timeout };
  const now = clockNowNs(clockId);
  if (now === undefined) return undefined;
  return { userdata: view.getBigUint64(at, true), remainingNs: timeout > now ? timeout - now : 0n };
}

/** The clocks uvwasi reads for an absolute deadline; CPU-time deadlines are left to uvwasi. */
function clockNowNs(clockId: number): bigint | undefined {
  if (clockId === CLOCK_MONOTONIC) return process.hrtime.bigint();
  if (clockId === CLOCK_REALTIME) return BigInt(Date.now()) * 1_000_000n;
  return undefined;
}

/** event: userdata u64 @0, error u16 @8, type u8 @10, fd_readwrite (unused for clocks) @16. */
function writeClockEvent(view: DataView, at: number, userdata: bigint): void {
  for (let i = 0; i < EVENT_BYTES; i++) view.setUint8(at + i, 0);
  view.setBigUint64(at, userdata, true);
  view.setUint8(at + 10, EVENTTYPE_CLOCK);
}

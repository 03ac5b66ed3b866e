// Fuzzing the daemon's client of the guest agent (issue 15, item 4; DESIGN.md invariant 8: everything a
// guest writes is hostile). A fake agent serves agent.proto's service on a unix socket and answers every
// call with seeded-random replies: messages generated field by field from the reply's type with extreme
// values, fields of the wrong wire type, random bytes, replies over the size limit, random statuses,
// hostile guest-span trailers, hangs. Each AgentClient call must resolve with values within bounds or
// reject with a KtsError, by its deadline; close() must end what is pending. KTS_FUZZ_SEED sets the seed
// (printed), KTS_FUZZ_AGENT_CALLS the number of calls (default 3,000), KTS_FUZZ_CONCURRENCY how many at
// once (24; 1 ties each rejection to its answer), KTS_FUZZ_DEBUG=1 prints the rejections' messages.
// Inputs that once broke the client are the named cases at the end.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import protobuf from 'protobufjs';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { Prng } from '../../../test/fuzz/fuzzer.js';
import { AGENT_SERVICE, loadAgentDefinition } from '../../agentProtocol/agentProto.js';
import { KtsError } from '../../core/errors.js';
import type { ContainerStatus, ProcessExit } from '../../core/sandboxer.js';
import { decodeGuestSpans, GUEST_SPANS_TRAILER } from '../../telemetry/guestSpans.js';
import { initTracing, shutdownTracing } from '../../telemetry/tracing.js';
import { AGENT_MAX_REPLY_BYTES, AGENT_PROTO_FILE, AgentClient, type AgentHealth } from './agentClient.js';

/** The guest spans the client hands on for export, to check what got past decodeGuestSpans. */
const exported = vi.hoisted(() => ({ spans: [] as unknown[] }));
vi.mock('../../telemetry/tracing.js', async (importOriginal) => ({
  ...(await importOriginal<typeof import('../../telemetry/tracing.js')>()),
  exportForeignSpans: (spans: unknown[]) => exported.spans.push(...spans),
}));

const SEED = Number(process.env.KTS_FUZZ_SEED ?? randomBytes(4).readUInt32LE(0));
const CALLS = Number(process.env.KTS_FUZZ_AGENT_CALLS ?? 3_000);
const CONCURRENCY = Number(process.env.KTS_FUZZ_CONCURRENCY ?? 24);
const CALL_TIMEOUT_MS = 100;
/** How late past its own deadline a call may settle before it counts as a hang (a loaded 2-core machine). */
const SLACK_MS = 1_500;
const MAX_PID = 4_194_304;
const STATES = ['created', 'running', 'stopped', 'absent'];
const JS_ERROR = /Cannot read properties of|is not a function|is not iterable|Maximum call stack|Invalid time value|Invalid array length/;

const replyTypes = (() => {
  const root = protobuf.loadSync(AGENT_PROTO_FILE);
  root.resolveAll();
  const service = root.lookupService(AGENT_SERVICE);
  return new Map(service.methodsArray.map((method) => [method.name, method.resolvedResponseType!]));
})();

/** The fake agent's answer to one call. */
type Answer =
  | { kind: 'reply'; bytes: Buffer; trailer?: grpc.Metadata; delayMs: number }
  | { kind: 'status'; code: number; details: string; trailer?: grpc.Metadata; delayMs: number }
  | { kind: 'hang' };

/** Times a guest may claim for a span (HrTime, [seconds, nanoseconds]): the epoch, before it, far after, fractions, wrong shapes. */
const WILD_TIMES: Array<() => unknown> = [
  () => [0, 0], () => [-1, 5], () => [1.5, 2], () => [Number.MAX_SAFE_INTEGER, 999_999_999], () => [1, 2e9], () => [1], () => 'x', () => [1e300, 0],
  () => [Math.floor(Date.now() / 1000) - 86_400 * 365 * 60, 0], () => [Math.floor(Date.now() / 1000) + 86_400 * 365 * 1000, 0], () => [4_000_000_000, 0],
];

/** Seeded replies from a hostile guest, generated from the reply's protobuf type. */
class HostileAgent {
  constructor(private readonly rng: Prng) {}

  string(): string {
    const rng = this.rng;
    return rng.pick([
      () => '', () => rng.pick(STATES), () => 'RUNNING', () => 'running\u0000', () => '\u0000', () => 'pod-1', () => 'fz-pod.a_b', () => '-pod', () => '../etc',
      () => 'x'.repeat(rng.pick([128, 129, 10_000, 1_000_000])), () => 'ü🙂'.repeat(100), () => rng.bytes(rng.int(64)).toString('latin1'), () => '0.1.0', () => 'a\nb',
    ])();
  }

  /** A value of the field's own type, often at or past a bound. */
  scalar(field: protobuf.Field): unknown {
    const rng = this.rng;
    switch (field.type) {
      case 'string': return this.string();
      case 'bool': return rng.chance(0.5);
      case 'double': case 'float': return rng.pick([0, -0, -1, 1.5, NaN, Infinity, -Infinity, 1e10, 1e10 + 1, Number.MAX_VALUE, 5e-324, 3600.25]);
      case 'uint32': return rng.pick([0, 1, 2, 42, MAX_PID, MAX_PID + 1, 4294967295, rng.int(5000)]);
      case 'int32': return rng.pick([0, 1, -1, 255, 256, 137, -2147483648, 2147483647, rng.int(300)]);
      case 'int64': return rng.pick([0, -1, Date.now(), 8.64e15, 8.64e15 + 1, '9223372036854775807', '-9223372036854775808', 2 ** 53, 2 ** 53 + 2]);
      default: return rng.pick([0, 1, 2 ** 53, '18446744073709551615', '9223372036854775808', rng.int(1e9)]);
    }
  }

  /** A reply message of `type`, field by field; repeated fields short, empty or past the client's limit. */
  message(type: protobuf.Type): Buffer {
    const out: Record<string, unknown> = {};
    for (const field of type.fieldsArray) {
      if (this.rng.chance(0.15)) continue;
      if (field.repeated) {
        const count = this.rng.pick([0, 1, 3, 50, 100_000, 100_001, 300_000]);
        out[field.name] = Array.from({ length: count }, () => (this.rng.chance(0.99) ? 1 + this.rng.int(1000) : this.scalar(field)));
      } else {
        out[field.name] = this.scalar(field);
      }
    }
    return Buffer.from(type.encode(type.fromObject(out)).finish());
  }

  /** The reply type's field numbers (and unknown ones) with random wire types and contents. */
  wrongTypes(type: protobuf.Type): Buffer {
    const writer = protobuf.Writer.create();
    const ids = [...type.fieldsArray.map((field) => field.id), 6, 15, 1000, 536_870_911];
    for (let n = 1 + this.rng.int(6); n > 0; n--) {
      const id = this.rng.pick(ids);
      const wireType = this.rng.pick([0, 1, 2, 5, 3, 4, 6, 7]);
      writer.uint32((id << 3) | wireType);
      if (wireType === 0) writer.uint64(this.rng.pick([0, 1, 4294967295, '18446744073709551615']));
      else if (wireType === 1) writer.fixed64(this.rng.int(2 ** 31));
      else if (wireType === 2) writer.bytes(this.rng.bytes(this.rng.int(40)));
      else if (wireType === 5) writer.fixed32(this.rng.int(2 ** 31));
    }
    return Buffer.from(writer.finish());
  }

  /** A guest-spans trailer: garbage, or span lists of this call's trace with hostile fields. */
  spansTrailer(traceparent: string | undefined): Buffer {
    const rng = this.rng;
    const [, traceId = '0'.repeat(32), parentId = '0'.repeat(16)] = /^00-([0-9a-f]{32})-([0-9a-f]{16})-/.exec(traceparent ?? '') ?? [];
    if (rng.chance(0.2)) return rng.pick([() => rng.bytes(rng.int(200)), () => Buffer.from(rng.pick(['[]', 'null', '{}', '"x"', '[null,1,"a",[]]', '[{}]']))])();
    const hex = (length: number) => rng.bytes(length / 2).toString('hex');
    const wellFormed = (wild: boolean) => ({
      t: traceId, s: hex(16), p: rng.pick([parentId, parentId, '', hex(16)]), n: 'agent.Check', k: rng.int(5), st: time(wild), et: time(wild),
      a: { 'rpc.method': 'Check', n: 1, b: true, l: ['a', 'b'] }, c: rng.int(3), m: '',
    });
    const time = (wild = true) => (wild ? rng.pick(WILD_TIMES)() : [Math.floor(Date.now() / 1000) + rng.pick([0, -3600, 3600]), rng.int(1e9)]);
    // Half the spans well-formed (their times wild or not), to get past decodeGuestSpans; the others wrong in one field or many.
    const span = () => (rng.chance(0.5) ? wellFormed(rng.chance(0.5)) : {
      ...wellFormed(true),
      ...(rng.chance(0.3) && { t: hex(32) }), ...(rng.chance(0.3) && { s: rng.pick(['', 'XYZ', hex(32)]) }), ...(rng.chance(0.3) && { p: rng.pick(['nothex', 7, hex(8)]) }),
      ...(rng.chance(0.3) && { n: rng.pick(['x'.repeat(200), 'x'.repeat(201), '', 5]) }), ...(rng.chance(0.3) && { k: rng.pick([-1, 1.5, '1', 6, null]) }),
      ...(rng.chance(0.3) && { c: rng.pick([-1, 0.5, 3, '0']) }), ...(rng.chance(0.3) && { m: rng.pick(['m'.repeat(1500), 3, null]) }),
      a: rng.pick([
        {}, JSON.parse('{"__proto__":["x"],"constructor":"y","toString":1}'), JSON.parse('{"__proto__":"s","valueOf":["v"]}'),
        { nested: { deep: 1 }, mixed: [1, 'a'], big: 'v'.repeat(1500) }, Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${i}`, i])), null, 'str', [1, 2],
      ]),
    });
    // Mostly a few spans; now and then hundreds, past what one HTTP/2 header block may carry (the client's session then ends).
    const spans = Array.from({ length: rng.chance(0.03) ? 300 : rng.pick([1, 2, 10]) }, span);
    return Buffer.from(JSON.stringify(spans));
  }

  trailer(traceparent: string | undefined): grpc.Metadata | undefined {
    if (this.rng.chance(0.5)) return undefined;
    const metadata = new grpc.Metadata();
    const spans = this.spansTrailer(traceparent);
    metadata.add(GUEST_SPANS_TRAILER, spans);
    if (this.rng.chance(0.1)) metadata.add(GUEST_SPANS_TRAILER, this.spansTrailer(traceparent));
    if (this.rng.chance(0.1)) metadata.add('x-other-bin', this.rng.bytes(this.rng.int(100)));
    if (this.rng.chance(0.02)) metadata.add('x-big', 'b'.repeat(this.rng.pick([4000, 20_000])));
    return metadata;
  }

  /** What the last answer was, for KTS_FUZZ_DEBUG. */
  last = '';

  answer(method: string, traceparent: string | undefined): Answer {
    const answer = this.plan(method, traceparent);
    this.last = `${answer.kind} ${answer.kind === 'status' ? `${answer.code} ${answer.details.length}` : answer.kind === 'reply' ? answer.bytes.length : ''} trailer ${answer.kind !== 'hang' && answer.trailer ? JSON.stringify(answer.trailer.toJSON()).length : 0}`;
    return answer;
  }

  private plan(method: string, traceparent: string | undefined): Answer {
    const rng = this.rng;
    const type = replyTypes.get(method)!;
    // WaitProcess has no deadline: a guest that never answers is ended by close() alone (its own case below).
    const delayMs = rng.chance(0.95) ? 0 : rng.int(method === 'WaitProcess' ? 100 : 2 * CALL_TIMEOUT_MS);
    const trailer = this.trailer(traceparent);
    const r = rng.next();
    if (r < 0.45) return { kind: 'reply', bytes: this.message(type), trailer, delayMs };
    if (r < 0.55) return { kind: 'reply', bytes: this.wrongTypes(type), trailer, delayMs };
    if (r < 0.62) return { kind: 'reply', bytes: rng.bytes(rng.int(300)), trailer, delayMs };
    if (r < 0.65) return { kind: 'reply', bytes: Buffer.alloc(0), trailer, delayMs };
    if (r < 0.68) {
      // Just over, or just under, the client's limit.
      const padding = AGENT_MAX_REPLY_BYTES - 16 + rng.int(32);
      return { kind: 'reply', bytes: Buffer.concat([this.message(type), protobuf.Writer.create().uint32((15 << 3) | 2).bytes(Buffer.alloc(padding)).finish()]), trailer, delayMs };
    }
    if (r < 0.95 || method === 'WaitProcess') {
      const code = rng.chance(0.9) ? rng.int(17) : rng.pick([17, 99, -1]);
      const details = rng.chance(0.03) ? 'x'.repeat(rng.pick([3000, 100_000])) : rng.pick(['', 'no such container', 'line\nbreak\u0000nul', 'ü🙂', '%s%n%00', 'y'.repeat(2000)]);
      return { kind: 'status', code, details, trailer, delayMs };
    }
    return { kind: 'hang' };
  }
}

const identity = (value: Buffer) => value;

/** A kts.agent.v1.Agent on a unix socket whose every method asks `answer` what to send. */
async function startFakeAgent(socket: string, answer: (method: string, call: grpc.ServerUnaryCall<Buffer, Buffer>) => Answer): Promise<{ server: grpc.Server; hanging: Set<grpc.ServerUnaryCall<Buffer, Buffer>> }> {
  const definition = loadAgentDefinition(AGENT_PROTO_FILE);
  const rawDefinition: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
  const implementation: grpc.UntypedServiceImplementation = {};
  const hanging = new Set<grpc.ServerUnaryCall<Buffer, Buffer>>();
  for (const [name, method] of Object.entries(definition)) {
    rawDefinition[name] = { ...(method as grpc.MethodDefinition<Buffer, Buffer>), requestDeserialize: identity, responseSerialize: identity };
    implementation[name] = (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      const planned = answer(name, call);
      if (planned.kind === 'hang') {
        hanging.add(call);
        call.on('cancelled', () => hanging.delete(call));
        return;
      }
      const send = () => {
        if (planned.kind === 'reply') return callback(null, planned.bytes, planned.trailer);
        callback({ code: planned.code, details: planned.details, metadata: planned.trailer ?? new grpc.Metadata() });
      };
      if (planned.delayMs > 0) setTimeout(send, planned.delayMs);
      else send();
    };
  }
  const server = new grpc.Server();
  server.addService(rawDefinition, implementation);
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (error) => (error ? reject(error) : resolve())));
  return { server, hanging };
}

/** What is wrong with a value an AgentClient method resolved with, or undefined. */
const isPid = (pid: unknown) => Number.isInteger(pid) && (pid as number) >= 1 && (pid as number) <= MAX_PID;
function exitProblem(exit: ProcessExit): string | undefined {
  if (!Number.isInteger(exit.exitStatus) || exit.exitStatus < 0 || exit.exitStatus > 255) return `exit status ${exit.exitStatus}`;
  if (!(exit.exitedAt instanceof Date) || !Number.isFinite(exit.exitedAt.getTime()) || exit.exitedAt.getTime() < 0) return `exited at ${exit.exitedAt}`;
  return undefined;
}
function healthProblem(health: AgentHealth): string | undefined {
  if (!Number.isFinite(health.uptimeSeconds) || health.uptimeSeconds < 0) return `uptime ${health.uptimeSeconds}`;
  if (typeof health.agentVersion !== 'string' || health.agentVersion.length > 128) return `agent version of ${health.agentVersion.length} characters`;
  // Recorded on SandboxStarted and printed by kts: a guest must not get a newline, escape or 1 MB string in.
  if (!/^[A-Za-z0-9 ._+~-]{0,64}$/.test(health.ociRuntime)) return `OCI runtime ${JSON.stringify(health.ociRuntime.slice(0, 80))}`;
  // Recorded on SandboxStarted as guest.agent_jit: only ever a boolean, whatever the guest sends.
  if (typeof health.jitless !== 'boolean') return `jitless ${JSON.stringify(health.jitless)}`;
  if (health.pod && (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(health.pod.sandboxId) || !isPid(health.pod.pid) || typeof health.pod.alive !== 'boolean')) return `pod ${JSON.stringify(health.pod)}`;
  return undefined;
}
function statusProblem(status: ContainerStatus): string | undefined {
  if (!STATES.includes(status.state)) return `state ${status.state}`;
  if (status.pid !== undefined && !isPid(status.pid)) return `pid ${status.pid}`;
  return status.exit ? exitProblem(status.exit) : undefined;
}

/** Every public AgentClient method, with arguments a daemon would pass, the bound of its reply, and how long it may take. */
interface Probe {
  name: string;
  run: (client: AgentClient) => Promise<unknown>;
  problem: (value: unknown) => string | undefined;
  limitMs: number;
  /** No deadline by design (waitProcess): a guest that never answers, or wedges the channel, is ended by close() alone. */
  untilClose?: boolean;
}
const none = (value: unknown) => (value === undefined ? undefined : `resolved with ${JSON.stringify(value)}`);
const stdio = { stdin: '/run/kts/io/in', stdout: '/run/kts/io/out' };
const PROBES: Probe[] = [
  { name: 'check', run: (c) => c.check(), problem: (v) => healthProblem(v as AgentHealth), limitMs: CALL_TIMEOUT_MS },
  { name: 'waitForReady', run: (c) => c.waitForReady(3 * CALL_TIMEOUT_MS), problem: (v) => healthProblem(v as AgentHealth), limitMs: 4 * CALL_TIMEOUT_MS },
  { name: 'startPod', run: (c) => c.startPod({ sandboxId: 'pod-1', hostname: 'pod' }), problem: (v) => (isPid((v as { pid: number }).pid) ? undefined : `pid ${(v as { pid: number }).pid}`), limitMs: CALL_TIMEOUT_MS },
  { name: 'createContainer', run: (c) => c.createContainer({ containerId: 'c1', bundle: '/run/kts/share/c1', stdio }), problem: (v) => (isPid((v as { pid: number }).pid) ? undefined : 'pid'), limitMs: CALL_TIMEOUT_MS },
  { name: 'startContainer', run: (c) => c.startContainer('c1'), problem: (v) => (isPid((v as { pid: number }).pid) ? undefined : 'pid'), limitMs: CALL_TIMEOUT_MS },
  { name: 'killContainer', run: (c) => c.killContainer('c1', 9, true), problem: none, limitMs: CALL_TIMEOUT_MS },
  { name: 'killProcess', run: (c) => c.killProcess(42, 15), problem: none, limitMs: CALL_TIMEOUT_MS },
  { name: 'deleteContainer', run: (c) => c.deleteContainer('c1'), problem: none, limitMs: CALL_TIMEOUT_MS },
  { name: 'containerStatus', run: (c) => c.containerStatus('c1'), problem: (v) => statusProblem(v as ContainerStatus), limitMs: CALL_TIMEOUT_MS },
  { name: 'execProcess', run: (c) => c.execProcess({ containerId: 'c1', execId: 'e1', process: { args: ['true'], cwd: '/' } as never, stdio }), problem: (v) => (isPid((v as { pid: number }).pid) ? undefined : 'pid'), limitMs: CALL_TIMEOUT_MS },
  { name: 'startedExecPid', run: (c) => c.startedExecPid('c1', 'e1'), problem: (v) => (v === undefined || isPid(v) ? undefined : `pid ${v}`), limitMs: CALL_TIMEOUT_MS },
  { name: 'waitProcess', run: (c) => c.waitProcess(42), problem: (v) => exitProblem(v as ProcessExit), limitMs: 100, untilClose: true },
  { name: 'pids', run: (c) => c.pids('c1'), problem: (v) => (Array.isArray(v) && v.length <= 100_000 && v.every(isPid) ? undefined : `pids ${String(v).slice(0, 80)}`), limitMs: CALL_TIMEOUT_MS },
  {
    name: 'stats', run: (c) => c.stats('c1'), limitMs: CALL_TIMEOUT_MS,
    problem: (v) => (Object.values(v as Record<string, number>).length === 7 && Object.values(v as Record<string, number>).every((n) => Number.isFinite(n) && n >= 0) ? undefined : `stats ${JSON.stringify(v)}`),
  },
  { name: 'configureNetwork', run: (c) => c.configureNetwork({ interfaces: [{ name: 'eth0', mac: 'aa:bb:cc:dd:ee:ff', mtu: 1500, addresses: ['10.88.0.5/16'] }], routes: [] }), problem: none, limitMs: CALL_TIMEOUT_MS },
  { name: 'stopPod', run: (c) => c.stopPod(50), problem: (v) => exitProblem(v as ProcessExit), limitMs: 50 + CALL_TIMEOUT_MS },
];

/** What is wrong with how one call ended: a raw JS error, a KtsError without a message or quoting a JS error. */
function rejectionProblem(error: unknown): string | undefined {
  if (!(error instanceof KtsError)) return `rejected with ${error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error)}`;
  if (!error.message) return `a KtsError (${error.kind}) without a message`;
  if (JS_ERROR.test(error.message)) return `a JavaScript error in a KtsError: ${error.message.slice(0, 300)}`;
  return undefined;
}

/** Runs one probe and says what was wrong with its outcome, if anything; a call that outlives its limit is a hang. */
async function probeOnce(client: AgentClient, probe: Probe): Promise<{ problem?: string; outcome: string; message?: string; waiting?: Promise<unknown> }> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), probe.limitMs + SLACK_MS)));
  const settled = probe.run(client).then((value) => ({ value }), (error: unknown) => ({ error }));
  const result = await Promise.race([settled, late]).finally(() => clearTimeout(timer));
  if (result === 'late' && probe.untilClose) return { outcome: 'waiting until close()', waiting: settled };
  if (result === 'late') return { problem: `no answer ${probe.limitMs + SLACK_MS} ms after the call (its deadline is ${probe.limitMs} ms)`, outcome: 'hang' };
  if ('error' in result) return { problem: rejectionProblem(result.error), outcome: result.error instanceof KtsError ? result.error.kind : 'raw error', message: String((result.error as Error).message) };
  return { problem: probe.problem(result.value), outcome: 'resolved' };
}

/** What is wrong with a guest span the client handed on for export: another trace, a bound broken, or OTLP cannot encode it. */
function exportedSpanProblem(span: ReadableSpan, traceIds: Set<string>): string | undefined {
  const { traceId, spanId } = span.spanContext();
  if (!traceIds.has(traceId)) return `a span of trace ${traceId}, which no call had`;
  if (!/^[0-9a-f]{16}$/.test(spanId) || span.name.length > 200 || Object.keys(span.attributes).length > 64) return `span ${spanId} ${span.name.slice(0, 40)} out of bounds`;
  if (![Object.prototype, null].includes(Object.getPrototypeOf(span.attributes))) return `span ${spanId}'s attributes have the prototype ${JSON.stringify(Object.getPrototypeOf(span.attributes))}`;
  for (const time of [span.startTime, span.endTime, span.duration]) {
    if (!time.every((part) => Number.isFinite(part))) return `span ${spanId} has time ${JSON.stringify(time)}`;
  }
  try {
    ProtobufTraceSerializer.serializeRequest([span]);
    JsonTraceSerializer.serializeRequest([span]);
  } catch (error) {
    return `span ${spanId} cannot be exported: ${(error as Error).message}`;
  }
  return undefined;
}

describe(`AgentClient against a hostile agent (seed ${SEED})`, () => {
  let dir: string;
  let socket: string;
  let agent: { server: grpc.Server; hanging: Set<grpc.ServerUnaryCall<Buffer, Buffer>> };
  const traceIds = new Set<string>();
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  let hostile: HostileAgent;
  /** Set per test: the fake agent answers with this instead of the hostile generator. */
  let scripted: ((method: string, traceparent: string | undefined) => Answer | undefined) | undefined;

  beforeAll(async () => {
    // Real trace ids, so the client injects a traceparent and guest spans of the call's trace get past decodeGuestSpans.
    initTracing('kts-agent-fuzz');
    process.on('unhandledRejection', onUnhandled);
    process.on('uncaughtException', onUnhandled);
    dir = mkdtempSync(path.join(tmpdir(), 'kts-agent-fuzz-'));
    socket = path.join(dir, 'agent.sock');
    hostile = new HostileAgent(new Prng(SEED));
    agent = await startFakeAgent(socket, (method, call) => {
      const traceparent = call.metadata.get('traceparent')[0]?.toString();
      const traceId = /^00-([0-9a-f]{32})-/.exec(traceparent ?? '')?.[1];
      if (traceId) traceIds.add(traceId);
      return scripted?.(method, traceparent) ?? hostile.answer(method, traceparent);
    });
  });
  afterEach(() => {
    scripted = undefined;
  });
  afterAll(async () => {
    process.off('unhandledRejection', onUnhandled);
    process.off('uncaughtException', onUnhandled);
    agent?.server.forceShutdown();
    await shutdownTracing();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it(`every method, ${CALLS} calls of random replies: each resolves within bounds or rejects with a KtsError, by its deadline`, async () => {
    console.log(`kts agent fuzz: seed ${SEED} (KTS_FUZZ_SEED=${SEED} reproduces the replies; timing decides their interleaving), ${CALLS} calls`);
    const rng = new Prng(SEED ^ 0x61676e74);
    const client = new AgentClient(socket, { callTimeoutMs: CALL_TIMEOUT_MS });
    const findings: string[] = [];
    const outcomes = new Map<string, number>();
    /** Rejections' messages, digits elided, for KTS_FUZZ_DEBUG=1. */
    const messages = new Map<string, number>();
    let longest = '';
    /** waitProcess calls the guest has not answered: close() must end them. */
    const stillWaiting: Array<Promise<unknown>> = [];
    const started = Date.now();
    let issued = 0;
    const worker = async () => {
      while (issued < CALLS) {
        issued++;
        const probe = rng.pick(PROBES);
        const { problem, outcome, message, waiting } = await probeOnce(client, probe);
        if (waiting) stillWaiting.push(waiting);
        if (message && message.length > longest.length) longest = message;
        const line = `${message?.replace(/\d+/g, 'N').slice(0, 160)}${process.env.KTS_FUZZ_DEBUG ? ` <- ${hostile.last}` : ''}`;
        if (message) messages.set(line, (messages.get(line) ?? 0) + 1);
        outcomes.set(`${probe.name} ${outcome}`, (outcomes.get(`${probe.name} ${outcome}`) ?? 0) + 1);
        if (problem) findings.push(`${probe.name}: ${problem}${process.env.KTS_FUZZ_DEBUG ? ` <- ${hostile.last}` : ''}`);
      }
    };
    try {
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    } finally {
      client.close();
    }
    const afterClose = await Promise.race([Promise.all(stillWaiting), new Promise((resolve) => setTimeout(() => resolve('still pending 1 s after close()'), 1000))]);
    expect(afterClose).not.toBe('still pending 1 s after close()');
    for (const outcome of afterClose as Array<{ error?: unknown }>) expect(outcome.error).toMatchObject({ kind: 'unavailable' });
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    console.log(`kts agent fuzz: seed ${SEED}: ${issued} calls in ${seconds} s, ${exported.spans.length} guest spans exported; outcomes:\n${[...outcomes].sort().map(([k, n]) => `  ${k}: ${n}`).join('\n')}`);
    console.log(`kts agent fuzz: the longest rejection message has ${longest.length} characters: ${longest.slice(0, 120)}…`);
    if (process.env.KTS_FUZZ_DEBUG) console.log([...messages].sort((a, b) => b[1] - a[1]).map(([m, n]) => `${n} ${m}`).join('\n'));
    expect(findings.slice(0, 20), `findings (seed ${SEED}), ${findings.length} in all`).toEqual([]);
    const spanProblems = (exported.spans as ReadableSpan[]).map((span) => exportedSpanProblem(span, traceIds)).filter(Boolean);
    expect(spanProblems.slice(0, 20), `exported guest spans (seed ${SEED})`).toEqual([]);
    expect(unhandled.map(String), 'unhandled rejections and exceptions').toEqual([]);
  }, 120_000);

  it('close() rejects every call in flight, those the guest never answers included, as unavailable, at once', async () => {
    scripted = () => ({ kind: 'hang' });
    const client = new AgentClient(socket, { callTimeoutMs: 60_000 });
    const pending = PROBES.map((probe) => probe.run(client).then(() => 'resolved', (error: unknown) => error));
    await new Promise((resolve) => setTimeout(resolve, 200));
    const closedAt = Date.now();
    client.close();
    const outcomes = await Promise.all(pending);
    expect(Date.now() - closedAt).toBeLessThan(1_000);
    for (const outcome of outcomes) expect(outcome).toMatchObject({ kind: 'unavailable', message: expect.stringMatching(/closed/) });
    // Cancelled on the wire too, not only given up on: the guest sees every call end.
    for (let waited = 0; agent.hanging.size > 0 && waited < 2_000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(agent.hanging.size).toBe(0);
    await expect(client.check()).rejects.toMatchObject({ kind: 'unavailable' });
    expect(unhandled).toEqual([]);
  });

  // Inputs the fuzz found breaking the client, kept as named cases.

  /** A healthy Check reply whose trailer carries one well-formed guest span of trace `traceId`, child of `parentId`. */
  const checkWithSpan = (traceId: string, parentId: string): Answer => {
    const type = replyTypes.get('Check')!;
    const nowSeconds = Math.floor(Date.now() / 1000);
    const span = { t: traceId, s: 'a1b2c3d4e5f60718', p: parentId, n: 'kts.agent.v1.Agent/Check', k: 1, st: [nowSeconds, 0], et: [nowSeconds, 1000], a: { planted: true }, c: 0, m: '' };
    const trailer = new grpc.Metadata();
    trailer.add(GUEST_SPANS_TRAILER, Buffer.from(JSON.stringify([span])));
    return { kind: 'reply', bytes: Buffer.from(type.encode(type.fromObject({ uptimeSeconds: 1, agentVersion: '0.1.0' })).finish()), trailer, delayMs: 0 };
  };
  const planted = () => (exported.spans as ReadableSpan[]).filter((span) => span.attributes.planted === true);

  it('the guest\'s spans in the reply to a call made with tracing suppressed (waitForReady: trace id all zeros) are not exported (seed 1)', async () => {
    const zeros = { traceId: '0'.repeat(32), spanId: '0'.repeat(16) };
    expect(decodeGuestSpans(Buffer.from(JSON.stringify([{ t: zeros.traceId, s: 'a1b2c3d4e5f60718', p: zeros.spanId, n: 'x', k: 1, st: [1, 0], et: [1, 5], a: {}, c: 0, m: '' }])), zeros.traceId).spans).toEqual([]);
    scripted = (method, traceparent) => (method === 'Check' ? checkWithSpan(zeros.traceId, /^00-[0-9a-f]{32}-([0-9a-f]{16})-/.exec(traceparent ?? '')?.[1] ?? zeros.spanId) : undefined);
    const client = new AgentClient(socket, { callTimeoutMs: 1_000 });
    try {
      const before = planted().length;
      await expect(client.waitForReady(2_000)).resolves.toMatchObject({ uptimeSeconds: 1, agentVersion: '0.1.0' });
      expect(planted().length).toBe(before);
      // The same span in the reply to a traced call (its own trace) is exported: the check above is not vacuous.
      scripted = (method, traceparent) => {
        const [, traceId = '', spanId = ''] = /^00-([0-9a-f]{32})-([0-9a-f]{16})-/.exec(traceparent ?? '') ?? [];
        return method === 'Check' ? checkWithSpan(traceId, spanId) : undefined;
      };
      await client.check();
      expect(planted().length).toBe(before + 1);
    } finally {
      client.close();
    }
  });

  it('a guest span\'s attribute named "__proto__" is dropped, not made the prototype of the host\'s attributes object (seed 1)', () => {
    const traceId = 'ab'.repeat(16);
    const trailer = `[{"t":"${traceId}","s":"a1b2c3d4e5f60718","p":"","n":"x","k":1,"st":[1,0],"et":[1,5],"a":{"__proto__":["x"],"ok":"yes"},"c":0,"m":""}]`;
    const [span] = decodeGuestSpans(Buffer.from(trailer), traceId).spans;
    expect(Object.getPrototypeOf(span!.attributes)).toBe(Object.prototype);
    expect(span!.attributes).toEqual({ ok: 'yes' });
  });
});

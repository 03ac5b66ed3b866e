import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, credentials, Metadata, type CallOptions, type ClientUnaryCall, type ServiceDefinition, type ServiceError } from '@grpc/grpc-js';
import { SpanKind, context } from '@opentelemetry/api';
import { suppressTracing } from '@opentelemetry/core';
import { AGENT_SERVICE as AGENT_SERVICE_NAME, loadAgentDefinition, type ConfigureNetworkRequest, type WireStdio } from '../../agentProtocol/agentProto.js';
import { fromServiceError } from '../../grpc/grpcErrors.js';
import { rpcAttributes } from '../../grpc/rpc.js';
import { PROTO_DIR } from '../../grpc/protos.js';
import { deadlineExceeded, errorMessage, internal, isKtsError, KtsError, unavailable } from '../../core/errors.js';
import type { ContainerRuntimeState, ContainerStats, ContainerStatus, OciProcess, ProcessExit, StdioPaths } from '../../core/sandboxer.js';
import { decodeGuestSpans, GUEST_SPANS_TRAILER, type GuestSpanOrigin } from '../../telemetry/guestSpans.js';
import { exportForeignSpans, injectContext, withSpan } from '../../telemetry/tracing.js';

export const AGENT_PROTO_FILE = path.join(PROTO_DIR, 'kts', 'agent', 'v1', 'agent.proto');
/** The guest is untrusted: no reply may be larger than this. */
export const AGENT_MAX_REPLY_BYTES = 4 * 1024 * 1024;
const DEFAULT_CALL_DEADLINE_MS = 30_000;
const READY_RETRY_MS = 250;
const MAX_PID = 4_194_304;
const MAX_PIDS = 100_000;
const MAX_EXIT_STATUS = 255;
/** The largest time a JS Date holds. */
const MAX_TIME_MS = 8.64e15;
const CONTAINER_STATES: readonly ContainerRuntimeState[] = ['created', 'running', 'stopped', 'absent'];

export interface AgentClientOptions {
  /** Deadline of every call but WaitProcess (which waits as long as the process runs); default 30 s. */
  callTimeoutMs?: number;
  protoFile?: string;
  /** Resource attributes of the guest's spans beside service.name, e.g. the VM's service.instance.id. */
  guestResource?: Record<string, string>;
}

export interface AgentHealth {
  uptimeSeconds: number;
  agentVersion: string;
  /** The guest's OCI runtime and version ("crun 1.8.1"); empty from an agent that does not say. */
  ociRuntime: string;
  /** The agent's node runs without a JIT (asked for under TCG); false from an agent that does not say. */
  jitless: boolean;
  /** Absent before StartPod. */
  pod?: { sandboxId: string; pid: number; alive: boolean };
}

/** A container as the guest sees it: every path is a guest path below the 9p share. */
export interface GuestContainerSpec {
  containerId: string;
  bundle: string;
  stdio: StdioPaths;
}

export interface GuestExecSpec {
  containerId: string;
  execId: string;
  process: OciProcess;
  /** Guest paths below the 9p share. */
  stdio: StdioPaths;
}

const definitions = new Map<string, ServiceDefinition>();

function agentDefinition(protoFile: string): ServiceDefinition {
  let definition = definitions.get(protoFile);
  if (!definition) {
    definition = loadAgentDefinition(protoFile);
    definitions.set(protoFile, definition);
  }
  return definition;
}

/**
 * The daemon's end of one guest's kts.agent.v1.Agent. Every reply is size-limited and validated
 * into domain types; every call but waitProcess has a deadline; close() cancels what is in flight.
 */
export class AgentClient {
  private readonly client: Client;
  private readonly definition: ServiceDefinition;
  private readonly callDeadlineMs: number;
  private readonly calls = new Set<ClientUnaryCall>();
  private readonly closing = new AbortController();
  private readonly guestResource?: Record<string, string>;

  /** socketPath: the host end of the channel, QEMU's chardev socket behind the guest's `kts.agent` port. */
  constructor(
    private readonly socketPath: string,
    options: AgentClientOptions = {},
  ) {
    this.definition = agentDefinition(options.protoFile ?? AGENT_PROTO_FILE);
    this.callDeadlineMs = options.callTimeoutMs ?? DEFAULT_CALL_DEADLINE_MS;
    this.guestResource = options.guestResource;
    this.client = new Client(`unix:${socketPath}`, credentials.createInsecure(), {
      'grpc.max_receive_message_length': AGENT_MAX_REPLY_BYTES,
      // A local socket: after QEMU or the daemon restarts, reconnect within a second, not grpc's two minutes.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
    });
  }

  async check(deadlineMs = this.callDeadlineMs): Promise<AgentHealth> {
    const reply = await this.call('Check', {}, deadlineMs);
    const health: AgentHealth = {
      uptimeSeconds: reply.number('uptimeSeconds', 0, 1e10), agentVersion: reply.string('agentVersion', 128),
      ociRuntime: reply.string('ociRuntime', 64, /^[A-Za-z0-9 ._+~-]*$/), jitless: reply.boolean('jitless'),
    };
    const podPid = reply.integer('podPid', 0, MAX_PID);
    if (podPid === 0) return health;
    return { ...health, pod: { sandboxId: reply.string('sandboxId', 128, /^[A-Za-z0-9][A-Za-z0-9_.-]*$/), pid: podPid, alive: reply.boolean('podAlive') } };
  }

  /** Calls Check until the agent answers: the guest boots for tens of seconds under TCG. */
  async waitForReady(deadlineMs: number): Promise<AgentHealth> {
    const deadline = Date.now() + deadlineMs;
    let attempts = 0;
    let lastError: unknown;
    for (let remaining = deadlineMs; remaining > 0; remaining = deadline - Date.now()) {
      attempts++;
      try {
        // One span for the whole wait (the caller's), not one per unanswered attempt.
        return await context.with(suppressTracing(context.active()), () => this.check(Math.min(remaining, this.callDeadlineMs)));
      } catch (error) {
        if (!isKtsError(error, 'unavailable') && !isKtsError(error, 'deadline_exceeded')) throw error;
        if (this.closing.signal.aborted) throw error;
        lastError = error;
      }
      await this.pause(Math.min(READY_RETRY_MS, deadline - Date.now()));
    }
    throw deadlineExceeded(`agent at ${this.socketPath} did not answer Check within ${deadlineMs} ms (${attempts} attempts; last: ${lastError === undefined ? 'none' : errorMessage(lastError)})`);
  }

  async startPod(pod: { sandboxId: string; hostname: string }): Promise<{ pid: number }> {
    return { pid: (await this.call('StartPod', { sandboxId: pod.sandboxId, hostname: pod.hostname })).integer('pid', 1, MAX_PID) };
  }

  async createContainer(spec: GuestContainerSpec): Promise<{ pid: number }> {
    const request = { containerId: spec.containerId, bundle: spec.bundle, stdio: wireStdio(spec.stdio) };
    return { pid: (await this.call('CreateContainer', request)).integer('pid', 1, MAX_PID) };
  }

  async startContainer(containerId: string): Promise<{ pid: number }> {
    return { pid: (await this.call('StartContainer', { containerId })).integer('pid', 1, MAX_PID) };
  }

  async killContainer(containerId: string, signal: number, all: boolean): Promise<void> {
    await this.call('KillContainer', { containerId, signal, all });
  }

  async killProcess(pid: number, signal: number): Promise<void> {
    await this.call('KillProcess', { pid, signal });
  }

  async deleteContainer(containerId: string): Promise<void> {
    await this.call('DeleteContainer', { containerId });
  }

  async containerStatus(containerId: string): Promise<ContainerStatus> {
    const reply = await this.call('ContainerStatus', { containerId });
    const state = reply.oneOf('state', CONTAINER_STATES);
    const pid = reply.integer('pid', 0, MAX_PID);
    const status: ContainerStatus = pid === 0 ? { state } : { state, pid };
    return reply.boolean('exited') ? { ...status, exit: reply.exit() } : status;
  }

  async execProcess(spec: GuestExecSpec): Promise<{ pid: number }> {
    const request = { containerId: spec.containerId, execId: spec.execId, processJson: JSON.stringify(spec.process), stdio: wireStdio(spec.stdio) };
    return { pid: (await this.call('ExecProcess', request)).integer('pid', 1, MAX_PID) };
  }

  async startedExecPid(containerId: string, execId: string): Promise<number | undefined> {
    const pid = (await this.call('StartedExecPid', { containerId, execId })).integer('pid', 0, MAX_PID);
    return pid === 0 ? undefined : pid;
  }

  /** No deadline: the agent answers when the process exits. close() cancels it. */
  async waitProcess(pid: number): Promise<ProcessExit> {
    return (await this.call('WaitProcess', { pid }, null)).exit();
  }

  async pids(containerId: string): Promise<number[]> {
    const reply = await this.call('Pids', { containerId });
    return reply.array('pids', MAX_PIDS).map((pid, index) => reply.checkInteger(`pids[${index}]`, pid, 1, MAX_PID));
  }

  async stats(containerId: string): Promise<ContainerStats> {
    const reply = await this.call('Stats', { containerId });
    const count = (field: keyof ContainerStats) => reply.number(field, 0, Number.MAX_VALUE);
    return {
      cpuUsageNanos: count('cpuUsageNanos'), cpuUserNanos: count('cpuUserNanos'), cpuKernelNanos: count('cpuKernelNanos'),
      memoryUsageBytes: count('memoryUsageBytes'), memoryLimitBytes: count('memoryLimitBytes'),
      pidsCurrent: count('pidsCurrent'), pidsLimit: count('pidsLimit'),
    };
  }

  /** The pod netns's interfaces and routes, applied to the guest's NICs before StartPod. */
  async configureNetwork(network: ConfigureNetworkRequest): Promise<void> {
    await this.call('ConfigureNetwork', network);
  }

  /** The agent may take timeoutMs to stop the pod, so the call's deadline is that much longer. */
  async stopPod(timeoutMs: number): Promise<ProcessExit> {
    return (await this.call('StopPod', { timeoutMs }, timeoutMs + this.callDeadlineMs)).exit();
  }

  /** Cancels every call in flight (they reject as unavailable) and closes the channel. */
  close(): void {
    this.closing.abort();
    for (const call of this.calls) call.cancel();
    this.calls.clear();
    this.client.close();
  }

  /** deadlineMs null: no deadline. */
  private call(method: string, request: object, deadlineMs: number | null = this.callDeadlineMs): Promise<Reply> {
    if (this.closing.signal.aborted) return Promise.reject(unavailable(`agent ${method}: the client is closed`));
    const definition = this.definition[method];
    if (!definition) return Promise.reject(internal(`agent.proto has no method ${method}`));
    const fullMethod = `${AGENT_SERVICE_NAME}/${method}`;
    return withSpan(fullMethod, { kind: SpanKind.CLIENT, attributes: rpcAttributes(fullMethod) }, (span) => {
      const startMs = performance.timeOrigin + performance.now();
      const metadata = new Metadata();
      for (const [key, value] of Object.entries(injectContext())) metadata.set(key, value);
      const deadline = deadlineMs === null ? undefined : Date.now() + deadlineMs;
      const options: CallOptions = deadline === undefined ? {} : { deadline };
      return new Promise<Reply>((resolve, reject) => {
        const call = this.client.makeUnaryRequest<object, unknown>(
          definition.path, definition.requestSerialize, definition.responseDeserialize, request, metadata, options,
          (error, response) => {
            this.calls.delete(call);
            span.setAttribute('rpc.grpc.status_code', error ? error.code : 0);
            if (error) reject(this.callError(method, error, deadlineMs, deadline));
            else resolve(new Reply(method, response));
          },
        );
        call.on('status', (status) => {
          const { traceId, spanId } = span.spanContext();
          const call = { spanId, startMs, endMs: performance.timeOrigin + performance.now() };
          const offset = importGuestSpans(status.metadata, traceId, { resource: this.guestResource, call });
          if (offset !== 0) span.setAttribute('kts.guest.clock_offset_ms', Math.round(offset * 1000) / 1000);
        });
        this.calls.add(call);
      });
    });
  }

  private callError(method: string, error: ServiceError, deadlineMs: number | null, deadline: number | undefined): KtsError {
    if (this.closing.signal.aborted) return unavailable(`agent ${method}: the client was closed`);
    const mapped = fromServiceError(error, `agent ${method}`);
    // The agent itself may report deadline_exceeded (a holder slow to start): only our own deadline means "no answer".
    if (mapped.kind === 'deadline_exceeded' && deadline !== undefined && Date.now() >= deadline) {
      return new KtsError('deadline_exceeded', `agent ${method} did not answer within ${deadlineMs} ms`, { cause: error });
    }
    return mapped;
  }

  private async pause(ms: number): Promise<void> {
    if (ms <= 0) return;
    try {
      await sleep(ms, undefined, { signal: this.closing.signal });
    } catch {
      throw unavailable(`agent client for ${this.socketPath} was closed`);
    }
  }
}

/** The guest's spans of this call, from its trailer, exported with the host's (see guestSpans.ts); how far they were moved onto the host's clock. */
function importGuestSpans(trailer: Metadata, traceId: string, origin: GuestSpanOrigin): number {
  const encoded = trailer.get(GUEST_SPANS_TRAILER)[0];
  if (!Buffer.isBuffer(encoded)) return 0;
  const { spans, clockOffsetMs } = decodeGuestSpans(encoded, traceId, origin);
  exportForeignSpans(spans);
  return clockOffsetMs;
}

function wireStdio(stdio: StdioPaths): WireStdio {
  return { stdin: stdio.stdin ?? '', stdout: stdio.stdout ?? '', stderr: stdio.stderr ?? '' };
}

/** One reply from the untrusted guest; every read checks type and range. */
class Reply {
  private readonly fields: Record<string, unknown>;

  constructor(
    private readonly method: string,
    message: unknown,
  ) {
    this.fields = typeof message === 'object' && message !== null ? (message as Record<string, unknown>) : {};
  }

  integer(field: string, min: number, max: number): number {
    return this.checkInteger(field, this.fields[field], min, max);
  }

  checkInteger(field: string, value: unknown, min: number, max: number): number {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) throw this.invalid(field, value, `an integer in ${min}-${max}`);
    return value;
  }

  number(field: string, min: number, max: number): number {
    const value = this.fields[field];
    if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) throw this.invalid(field, value, `a number in ${min}-${max}`);
    return value;
  }

  string(field: string, maxChars: number, pattern?: RegExp): string {
    const value = this.fields[field];
    if (typeof value !== 'string' || value.length > maxChars || (pattern && !pattern.test(value))) throw this.invalid(field, value, `a string of at most ${maxChars} characters${pattern ? ` matching ${pattern}` : ''}`);
    return value;
  }

  oneOf<T extends string>(field: string, allowed: readonly T[]): T {
    const value = this.fields[field];
    if (!allowed.includes(value as T)) throw this.invalid(field, value, `one of ${allowed.join(', ')}`);
    return value as T;
  }

  boolean(field: string): boolean {
    const value = this.fields[field];
    if (typeof value !== 'boolean') throw this.invalid(field, value, 'a boolean');
    return value;
  }

  array(field: string, maxItems: number): unknown[] {
    const value = this.fields[field];
    if (!Array.isArray(value) || value.length > maxItems) throw this.invalid(field, Array.isArray(value) ? `${value.length} items` : value, `a list of at most ${maxItems}`);
    return value;
  }

  exit(): ProcessExit {
    return { exitStatus: this.integer('exitStatus', 0, MAX_EXIT_STATUS), exitedAt: new Date(this.integer('exitedAtMs', 0, MAX_TIME_MS)) };
  }

  private invalid(field: string, value: unknown, expected: string): KtsError {
    const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 60)) : String(value).slice(0, 60);
    return internal(`agent ${this.method} sent an invalid reply: ${field} is ${shown}, not ${expected}`);
  }
}

import { statSync } from 'node:fs';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { containerMachine, sandboxMachine } from '../../machines/index.js';
import { SANDBOX_KINDS } from '../core/sandboxer.js';
import { errorMessage } from '../core/errors.js';
import type { AuditCheckpoint, EventStore, StoredEvent } from '../core/store.js';
import { withCommitTiming, type CommitResult } from '../store/timedStore.js';
import { KTS_VERSION } from '../version.js';
import type { Health } from './metricsServer.js';
import {
  POD_START_CALLS, POD_START_FAILED_PHASES, POD_START_PHASES, PodStartTracker, type FailedPhase, type FailureReason, type GuestStarted, type PodStarted,
} from './podStarts.js';
import { countEventsOfCurrentCall, observeRpcsWith, type RpcObserver, type RpcOutcome } from './rpcObserver.js';

/** Every metric name starts with this; README.md's "Metrics" table lists them all. */
export const METRIC_PREFIX = 'kts_';

// Bucket edges in seconds: a runc phase takes milliseconds, a VM start under TCG tens of seconds.
const POD_START_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
const GUEST_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120];
// A WAL commit with synchronous=NORMAL is tens of microseconds; a busy or failing disk shows in the top buckets.
const COMMIT_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
// A read answers in a millisecond, a VM start in tens of seconds, a Wait or an event stream for as long as it lasts.
const RPC_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
/** What `accelerator = "auto"` resolves to; the guest histograms start at 0 for each. */
const ACCELERATORS = ['kvm', 'tcg'];
/** Refusals come before the engine knows the sandbox, so they carry this kind. */
const UNKNOWN_KIND = 'unknown';
/** Commit results that mean the store itself is failing (a conflict is a stale writer, not a sick store). */
const STORE_FAILURES = new Set<CommitResult>(['unavailable', 'internal']);
/** What an append ends in; each starts at 0 so "failed commits" reads 0, not "no data". */
const COMMIT_RESULTS: CommitResult[] = ['ok', 'conflict', ...STORE_FAILURES];

/** prom-client's registry, which also says whether the daemon is healthy: `/healthz` serves that. */
class DaemonRegistry extends Registry {
  constructor(readonly health: () => Health) {
    super();
  }
}

/** States a read-model row can hold: every machine state but `absent`, which has no row. */
const SANDBOX_STATES = Object.keys(sandboxMachine.states).filter((state) => state !== 'absent');
const CONTAINER_STATES = Object.keys(containerMachine.states).filter((state) => state !== 'absent');

/**
 * The daemon's Prometheus metrics, derived from what it already records: the event log (pod starts,
 * transitions, guest boots), the read models (sandboxes and containers by state, read at scrape
 * time), timings of store commits and recovery, and every served gRPC call (rate, errors, duration,
 * through `observed` in the API wrappers). Nothing in the engine calls it.
 */
export class DaemonMetrics {
  readonly registry = new DaemonRegistry(() => this.health());
  private readonly podStart = new Histogram({
    name: 'kts_pod_start_duration_seconds', help: 'Pod start, from SandboxCreated until its first container is running, by sandbox kind.',
    labelNames: ['kind'], buckets: POD_START_BUCKETS, registers: [this.registry],
  });
  private readonly podStartPhase = new Histogram({
    name: 'kts_pod_start_phase_duration_seconds', help: 'One phase of a pod start (they add up to kts_pod_start_duration_seconds), by sandbox kind and phase.',
    labelNames: ['kind', 'phase'], buckets: POD_START_BUCKETS, registers: [this.registry],
  });
  private readonly podStartFailures = new Counter({
    name: 'kts_pod_start_failures_total',
    help: 'Pod starts that failed (a retried container counts each failure), by sandbox kind, the phase that failed, and reason: failed (its effect failed) or refused (the API refused the call before anything was recorded; kind unknown).',
    labelNames: ['kind', 'phase', 'reason'], registers: [this.registry],
  });
  private readonly rpcHandled = new Counter({
    name: 'kts_grpc_server_handled_total', help: 'gRPC calls served (over ttrpc too), by service, method and result: ok, or the error kind the status was made from.',
    labelNames: ['service', 'method', 'result'], registers: [this.registry],
  });
  private readonly rpcDuration = new Histogram({
    name: 'kts_grpc_server_handling_seconds', help: 'How long a gRPC call took to handle (a server stream: how long it stayed open), by service and method.',
    labelNames: ['service', 'method'], buckets: RPC_BUCKETS, registers: [this.registry],
  });
  private readonly guestBoot = new Histogram({
    name: 'kts_guest_boot_duration_seconds', help: 'VM sandboxes: from launching the hypervisor until the guest agent answers, by accelerator.',
    labelNames: ['accelerator'], buckets: GUEST_BUCKETS, registers: [this.registry],
  });
  private readonly guestPodStart = new Histogram({
    name: 'kts_guest_pod_start_duration_seconds', help: 'VM sandboxes: the guest agent starting the pod once the guest is up, by accelerator.',
    labelNames: ['accelerator'], buckets: GUEST_BUCKETS, registers: [this.registry],
  });
  private readonly transitions = new Counter({
    name: 'kts_transitions_total', help: 'Events committed to the log (each is one state-machine transition), by entity (sandbox, container, node) and event type.',
    labelNames: ['entity', 'type'], registers: [this.registry],
  });
  private readonly storeCommit = new Histogram({
    name: 'kts_store_commit_duration_seconds', help: 'One append to the event store, by result (ok, or the error kind: conflict, unavailable, internal…).',
    labelNames: ['result'], buckets: COMMIT_BUCKETS, registers: [this.registry],
  });
  private readonly recoveryDuration = new Gauge({
    name: 'kts_recovery_duration_seconds', help: 'How long recovery took when this daemon started: replay, reconcile with the host, orphan sweep.', registers: [this.registry],
  });
  private readonly recoveryFailures = new Gauge({
    name: 'kts_recovery_failures', help: 'Sandboxes (or the orphan sweep) recovery could not reconcile when this daemon started.', registers: [this.registry],
  });
  private readonly checkpointSequence = new Gauge({
    name: 'kts_audit_checkpoint_sequence', help: 'Sequence of the newest signed checkpoint of the event log (kts audit verify checks the log reaches it).', registers: [this.registry],
  });
  private readonly checkpointInfo = new Gauge({
    name: 'kts_audit_checkpoint_info', help: 'Always 1; its labels are the newest signed checkpoint (sequence, hash, time, key_id, signature), for a system that keeps them outside the node.',
    labelNames: ['sequence', 'hash', 'time', 'key_id', 'signature'], registers: [this.registry],
  });
  private unsubscribe?: () => void;
  private stopObservingRpcs?: () => void;
  private store?: EventStore;
  private recovered = false;
  private lastFailedCommit?: CommitResult;
  private readonly rpcObserver: RpcObserver = {
    served: (fullMethod) => this.zeroRpc(fullMethod),
    settled: (outcome) => this.recordRpc(outcome),
  };

  constructor(private readonly options: { dbPath: string }) {
    collectDefaultMetrics({ register: this.registry, prefix: METRIC_PREFIX });
    new Gauge({
      name: 'kts_build_info', help: 'Always 1; its labels say which kts (version) on which Node.js (node_version) this daemon runs.',
      labelNames: ['version', 'node_version'], registers: [this.registry],
    }).set({ version: KTS_VERSION, node_version: process.versions.node }, 1);
    this.zeroSeries();
  }

  /** Call once, with the store the engine will use; returns that store with its commits timed. */
  instrument(store: EventStore): EventStore {
    const tracker = new PodStartTracker({
      podStarted: (started) => this.recordPodStart(started),
      podStartFailed: ({ kind, phase }) => this.countPodStartFailure(kind, phase, 'failed'),
      guestStarted: (guest) => this.recordGuestStart(guest),
    });
    this.unsubscribe = store.onAppended((events) => {
      countEventsOfCurrentCall(events.length);
      this.countTransitions(events);
      tracker.observe(events);
    });
    this.registerReadModelGauges(store);
    this.store = store;
    this.stopObservingRpcs = observeRpcsWith(this.rpcObserver);
    return withCommitTiming(store, (seconds, result) => {
      this.storeCommit.observe({ result }, seconds);
      if (result === 'ok') this.lastFailedCommit = undefined;
      else if (STORE_FAILURES.has(result)) this.lastFailedCommit = result;
    });
  }

  /** The newest checkpoint replaces the one before: one series, so a scraper's history holds every one it saw. */
  recordCheckpoint(checkpoint: AuditCheckpoint): void {
    this.checkpointSequence.set(checkpoint.sequence);
    this.checkpointInfo.reset();
    const { sequence, hash, time, keyId, signature } = checkpoint;
    this.checkpointInfo.set({ sequence: String(sequence), hash, time, key_id: keyId, signature }, 1);
  }

  recordRecovery(seconds: number, report: { failures: readonly string[] }): void {
    this.recoveryDuration.set(seconds);
    this.recoveryFailures.set(report.failures.length);
    this.recovered = true;
  }

  /** Healthy once recovery is done, while the log reads and its last commit did not fail for the store's own sake. */
  health(): Health {
    if (!this.store) return { healthy: false, reason: 'the event store is not open yet' };
    if (!this.recovered) return { healthy: false, reason: 'recovering from the event log' };
    try {
      this.store.headSequence();
    } catch (error) {
      return { healthy: false, reason: `the event store cannot be read: ${errorMessage(error)}` };
    }
    if (this.lastFailedCommit) return { healthy: false, reason: `the last commit to the event store failed (${this.lastFailedCommit}); the next one that succeeds clears this` };
    return { healthy: true };
  }

  close(): void {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    this.stopObservingRpcs?.();
    this.stopObservingRpcs = undefined;
  }

  /** Every labelled series a dashboard reads starts at 0, so a panel shows 0 rather than "no data" before the first observation. */
  private zeroSeries(): void {
    for (const kind of SANDBOX_KINDS) {
      this.podStart.zero({ kind });
      for (const phase of POD_START_PHASES) this.podStartPhase.zero({ kind, phase });
      for (const phase of POD_START_FAILED_PHASES.filter((failed) => failed !== 'sandbox_create')) this.countPodStartFailure(kind, phase, 'failed', 0);
    }
    for (const phase of POD_START_FAILED_PHASES) this.countPodStartFailure(UNKNOWN_KIND, phase, 'refused', 0);
    for (const accelerator of ACCELERATORS) {
      this.guestBoot.zero({ accelerator });
      this.guestPodStart.zero({ accelerator });
    }
    for (const result of COMMIT_RESULTS) this.storeCommit.zero({ result });
  }

  private zeroRpc(fullMethod: string): void {
    const { service, method } = splitMethod(fullMethod);
    this.rpcHandled.inc({ service, method, result: 'ok' }, 0);
    this.rpcDuration.zero({ service, method });
  }

  /** RED per method; a pod-start call that failed before any event is a refused start (one that recorded events was counted from them). */
  private recordRpc(outcome: RpcOutcome): void {
    const { service, method } = splitMethod(outcome.fullMethod);
    this.rpcHandled.inc({ service, method, result: outcome.result });
    this.rpcDuration.observe({ service, method }, outcome.seconds);
    const refusedPhase = POD_START_CALLS[outcome.fullMethod];
    if (refusedPhase && outcome.result !== 'ok' && outcome.eventsRecorded === 0) {
      this.countPodStartFailure(UNKNOWN_KIND, refusedPhase, 'refused');
    }
  }

  private countPodStartFailure(kind: string, phase: FailedPhase, reason: FailureReason, count = 1): void {
    this.podStartFailures.inc({ kind, phase, reason }, count);
  }

  private recordPodStart(started: PodStarted): void {
    this.podStart.observe({ kind: started.kind }, started.totalSeconds);
    for (const [phase, seconds] of Object.entries(started.phaseSeconds)) this.podStartPhase.observe({ kind: started.kind, phase }, seconds);
  }

  private recordGuestStart(guest: GuestStarted): void {
    this.guestBoot.observe({ accelerator: guest.accelerator }, guest.bootSeconds);
    this.guestPodStart.observe({ accelerator: guest.accelerator }, guest.podStartSeconds);
  }

  private countTransitions(events: readonly StoredEvent[]): void {
    // Stream ids are `<entity>-<id>` or a bare entity name (`node`), so the label set stays small.
    for (const event of events) this.transitions.inc({ entity: event.streamId.split('-', 1)[0], type: event.type });
  }

  /** Gauges read at scrape time, so they always agree with what `kts pods` and `kts ps` show. */
  private registerReadModelGauges(store: EventStore): void {
    const dbPath = this.options.dbPath;
    new Gauge({
      name: 'kts_sandboxes', help: 'Sandboxes in the read model, by kind and state (removed ones included, as the log keeps them).',
      labelNames: ['kind', 'state'], registers: [this.registry],
      collect() {
        this.reset();
        for (const { kind, state, count } of sandboxCounts(store)) this.set({ kind, state }, count);
      },
    });
    new Gauge({
      name: 'kts_containers', help: 'Containers in the read model, by the kind of their sandbox and their state (deleted ones included).',
      labelNames: ['kind', 'state'], registers: [this.registry],
      collect() {
        this.reset();
        for (const { kind, state, count } of containerCounts(store)) this.set({ kind, state }, count);
      },
    });
    new Gauge({
      name: 'kts_store_head_sequence', help: 'Sequence number of the last event in the log: the number of events ever committed.', registers: [this.registry],
      collect() {
        this.set(store.headSequence());
      },
    });
    new Gauge({
      name: 'kts_store_file_size_bytes', help: 'Size of the SQLite database file and of its write-ahead log.', labelNames: ['file'], registers: [this.registry],
      collect() {
        this.set({ file: 'db' }, fileSize(dbPath));
        this.set({ file: 'wal' }, fileSize(`${dbPath}-wal`));
      },
    });
  }
}

function splitMethod(fullMethod: string): { service: string; method: string } {
  const [service = '', method = ''] = fullMethod.split('/');
  return { service, method };
}

interface StateCount {
  kind: string;
  state: string;
  count: number;
}

/** Every kind × state pair, zeros included, so a dashboard shows 0 rather than "no data". */
function sandboxCounts(store: EventStore): StateCount[] {
  return countByKindAndState(SANDBOX_STATES, store.listSandboxes().map(({ kind, state }) => ({ kind, state })));
}

function containerCounts(store: EventStore): StateCount[] {
  const kindOf = new Map(store.listSandboxes().map((sandbox) => [sandbox.id, sandbox.kind]));
  return countByKindAndState(CONTAINER_STATES, store.listContainers().map(({ sandboxId, state }) => ({ kind: kindOf.get(sandboxId) ?? 'unknown', state })));
}

function countByKindAndState(states: readonly string[], rows: ReadonlyArray<{ kind: string; state: string }>): StateCount[] {
  const counts = new Map<string, StateCount>();
  const add = (kind: string, state: string, count: number) => {
    const key = `${kind}\u0000${state}`;
    const entry = counts.get(key) ?? { kind, state, count: 0 };
    entry.count += count;
    counts.set(key, entry);
  };
  for (const kind of SANDBOX_KINDS) for (const state of states) add(kind, state, 0);
  for (const row of rows) add(row.kind, row.state, 1);
  return [...counts.values()];
}

function fileSize(file: string): number {
  return statSync(file, { throwIfNoEntry: false })?.size ?? 0;
}

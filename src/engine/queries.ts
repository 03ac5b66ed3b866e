import { containerMachine, isFinalState, nodeMachine, sandboxMachine, stateHasTag, type SandboxContext, type SandboxEvent } from '../../machines/index.js';
import { invalidArgument, notFound } from '../core/errors.js';
import { validateId } from '../core/ids.js';
import { parseRfc3339Nanos } from '../host/criLog.js';
import type { ChainVerification, ContainerRow, EventStore, SandboxRow, StoredEvent } from '../core/store.js';
import type { ContainerStats } from '../core/sandboxer.js';
import type { Engine } from './engine.js';
import { containerStream, sandboxStream } from './engineCore.js';
import { Entity } from './entity.js';

/**
 * What `kts` asks of the log and the read model: pods and containers by reference, a pod's history
 * and its replayed state, what still runs. Reads only; which rows count as gone, live or active is
 * the machines' word (their final state and tags), not a list of state names.
 */

export const isRemoved = (row: SandboxRow) => isFinalState(sandboxMachine, row.state);
export const isDeleted = (row: ContainerRow) => isFinalState(containerMachine, row.state);
/** The container has not ended yet: its process may still write output. */
export const isActive = (row: ContainerRow) => stateHasTag(containerMachine, row.state, 'active');

export function liveSandboxes(store: EventStore): SandboxRow[] {
  return store.listSandboxes().filter((row) => !isRemoved(row));
}

export function liveContainers(store: EventStore, sandboxId?: string): ContainerRow[] {
  return store.listContainers(sandboxId).filter((row) => !isDeleted(row));
}

/** Shortest id prefix accepted, as crictl takes them. */
const MIN_PREFIX = 3;

/** Finds a sandbox, live or removed, by id, `name`, `namespace/name`, or the id of one of its containers. */
export function resolveSandboxRef(store: EventStore, ref: string): SandboxRow {
  return resolveRef(store, ref).sandbox;
}

/**
 * A sandbox by id, `name`, `namespace/name`, a container's id, or a unique prefix of a live pod's or
 * container's id (what `kts pods` and `kts ps` print); `containerId` when the ref named a container.
 */
export function resolveRef(store: EventStore, ref: string): { sandbox: SandboxRow; containerId?: string } {
  const sandbox = resolveByIdOrName(store, ref);
  if (sandbox) return { sandbox };
  const rows = store.listSandboxes();
  const container = store.getContainer(ref);
  const owner = container && rows.find((row) => row.id === container.sandboxId);
  if (owner) return { sandbox: owner, containerId: container.id };
  if (ref.length >= MIN_PREFIX) {
    const pods: Array<{ sandbox: SandboxRow; containerId?: string }> = rows.filter((row) => !isRemoved(row) && row.id.startsWith(ref)).map((row) => ({ sandbox: row }));
    const containers = liveContainers(store).filter((row) => row.id.startsWith(ref))
      .flatMap((row) => rows.filter((pod) => pod.id === row.sandboxId).map((pod) => ({ sandbox: pod, containerId: row.id })));
    const candidates = [...pods, ...containers];
    if (candidates.length === 1) return candidates[0]!;
    if (candidates.length > 1) {
      throw invalidArgument(`id prefix "${ref}" is ambiguous: ${candidates.map((c) => c.containerId ? `container ${c.containerId}` : `pod ${c.sandbox.id}`).join(', ')}`);
    }
  }
  const archived = store.findArchivedPod(ref);
  if (archived) {
    throw notFound(`pod ${archived.sandboxId} (${archived.namespace}/${archived.name}) was archived by retention: its events, up to sequence ${archived.upToSequence}, are in ${archived.archive} (kts audit verify --file checks it)`);
  }
  throw notFound(`no pod or container "${ref}"`);
}

function resolveByIdOrName(store: EventStore, ref: string): SandboxRow | undefined {
  if (!ref) throw invalidArgument('a pod name or id is required');
  const rows = store.listSandboxes();
  const byId = rows.find((row) => row.id === ref);
  if (byId) return byId;
  const [namespace, name] = ref.includes('/') ? ref.split('/', 2) : [undefined, ref];
  const byName = rows.filter((row) => row.name === name && (namespace === undefined || row.namespace === namespace));
  const live = byName.filter((row) => !isRemoved(row));
  if (live.length === 1 || (live.length === 0 && byName.length >= 1)) return (live[0] ?? byName[byName.length - 1])!;
  if (live.length > 1) throw invalidArgument(`pod name "${ref}" is ambiguous: ${live.map((row) => row.id).join(', ')}; use an id`);
  return undefined;
}

export interface Inspection {
  sandbox: SandboxRow;
  /** The pod's machine as its stream leaves it, replayed from the store, never taken from memory. */
  state: string;
  context: SandboxContext;
  containers: ContainerRow[];
  /** The container the ref named, if it named one. */
  container?: ContainerRow;
}

/** The pod (live or removed) a ref names, replayed from its stream. */
export function inspect(store: EventStore, ref: string): Inspection {
  const { sandbox, containerId } = resolveRef(store, ref);
  const entity = Entity.load<SandboxContext, SandboxEvent>(sandboxStream(sandbox.id), sandboxMachine, store, () => undefined);
  try {
    const containers = store.listContainers(sandbox.id);
    const container = containerId === undefined ? undefined : containers.find((c) => c.id === containerId);
    return { sandbox, state: entity.state, context: entity.context, containers, ...(container && { container }) };
  } finally {
    entity.stop();
  }
}

/** A pod's events and its containers' in log order, and whether the chain holds over them (and the log since its last check). */
export function history(store: EventStore, ref: string): { sandboxId: string; events: StoredEvent[]; chain: ChainVerification } {
  const sandbox = resolveSandboxRef(store, ref);
  const streams = [sandboxStream(sandbox.id), ...store.listContainers(sandbox.id).map((row) => containerStream(row.id))];
  const events = streams.flatMap((streamId) => store.readStream(streamId)).sort((a, b) => a.sequence - b.sequence);
  return { sandboxId: sandbox.id, events, chain: store.verifyChain({ since: 'checkpoint', streams }) };
}

/** `kts events` and `kts history` filters; every one given must match. */
export interface EventFilter {
  /** A pod ref (as `kts history` takes): its events and its containers'. */
  pod?: string;
  /** Event types, exact or a prefix ending in `*` (`Container*`). */
  types?: string[];
  /** Only events of pods of this sandbox kind. */
  kind?: string;
  /** RFC3339: only events recorded at or after it. */
  since?: string;
}

/** Every event type the machines know: a filter naming another is a typo, refused rather than matching nothing. */
const EVENT_TYPES: string[] = [...new Set<string>([...sandboxMachine.root.events, ...containerMachine.root.events, ...nodeMachine.root.events])];

/** The filter as a test of one event; a filter that cannot match (unknown type or kind, bad time, no such pod) is refused. */
export function eventMatcher(store: EventStore, filter: EventFilter, kinds: readonly string[]): (event: StoredEvent) => boolean {
  const types = filter.types ?? [];
  for (const type of types) {
    const known = type.endsWith('*') ? EVENT_TYPES.some((name) => name.startsWith(type.slice(0, -1))) : EVENT_TYPES.includes(type);
    if (!known) throw invalidArgument(`no event type matches "${type}"; types are e.g. ${EVENT_TYPES.slice(0, 4).join(', ')}, or a prefix such as "Container*"`);
  }
  if (filter.kind && !kinds.includes(filter.kind)) throw invalidArgument(`unknown sandbox kind "${filter.kind}"; this daemon has ${kinds.join(', ')}`);
  const since = filter.since ? parseRfc3339Nanos(filter.since) : undefined;
  if (filter.since && since === undefined) throw invalidArgument(`since ${JSON.stringify(filter.since)} is not an RFC3339 time`);
  const podId = filter.pod ? resolveSandboxRef(store, filter.pod).id : undefined;
  const sandboxOf = (streamId: string) => streamId.startsWith('sandbox-') ? streamId.slice('sandbox-'.length)
    : streamId.startsWith('container-') ? store.getContainer(streamId.slice('container-'.length))?.sandboxId : undefined;
  return (event) => {
    if (types.length > 0 && !types.some((type) => (type.endsWith('*') ? event.type.startsWith(type.slice(0, -1)) : event.type === type))) return false;
    if (since !== undefined && (parseRfc3339Nanos(event.time) ?? 0n) < since) return false;
    if (podId === undefined && !filter.kind) return true;
    const sandboxId = sandboxOf(event.streamId);
    if (podId !== undefined && sandboxId !== podId) return false;
    return !filter.kind || (sandboxId !== undefined && store.getSandbox(sandboxId)?.kind === filter.kind);
  };
}

/** The newest event of the log, if any. */
export function logHead(store: EventStore): { sequence: number; event?: StoredEvent } {
  const sequence = store.headSequence();
  return { sequence, ...(sequence > 0 && { event: store.readAll({ afterSequence: sequence - 1, limit: 1 })[0] }) };
}

export interface StatsOf { id: string; sandboxId: string; name: string; stats: ContainerStats }

/** One container's stats, or those of every running container (of one pod); one that ends meanwhile is left out. */
export async function containerStats(engine: Engine, request: { sandboxId: string; containerId: string }): Promise<StatsOf[]> {
  if (request.containerId) {
    const row = engine.store.getContainer(validateId('container id', request.containerId));
    if (!row || isDeleted(row)) throw notFound(`container ${request.containerId} not found`);
    return [{ id: row.id, sandboxId: row.sandboxId, name: row.name, stats: await engine.containerStats(row.id) }];
  }
  const rows = engine.store.listContainers(request.sandboxId || undefined).filter((row) => row.state === 'running');
  const stats = await Promise.all(rows.map((row) => engine.containerStats(row.id).then((s) => ({ id: row.id, sandboxId: row.sandboxId, name: row.name, stats: s }), () => undefined)));
  return stats.filter((s) => s !== undefined);
}

/** Each ready pod's containers summed (or one pod's). */
export async function podStats(engine: Engine, sandboxId: string): Promise<StatsOf[]> {
  const rows = engine.store.listSandboxes().filter((row) => (sandboxId ? row.id === sandboxId : row.state === 'ready'));
  if (sandboxId && rows.length === 0) throw notFound(`pod ${sandboxId} not found`);
  return Promise.all(rows.map(async (row) => ({ id: row.id, sandboxId: row.id, name: row.name, stats: await engine.sandboxStats(row.id) })));
}

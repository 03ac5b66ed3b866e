/** What `kts pods`, `kts ps` and `kts stats` filter and show, as crictl does; no I/O here. */

/** Bad input on the command line: one line on stderr, exit code 2. */
export class UsageError extends Error {}

export interface PodRow {
  id: string; name: string; namespace: string; kind: string; state: string; pid: number;
  createdAt: string; ips: string[]; netnsPath: string; labels: Record<string, string>;
}

export interface ContainerRow {
  id: string; name: string; podId: string; state: string; pid: number; exitCode: number | null; image: string; createdAt: string;
  labels: Record<string, string>;
}

/** A container state as kts records it, or as crictl names it (created, running, exited). */
const CONTAINER_STATES = ['creating', 'created', 'starting', 'running', 'stopped', 'failed', 'deleting'];
const CRICTL_CONTAINER_STATES: Record<string, string[]> = { exited: ['stopped', 'failed'], unknown: ['creating', 'starting', 'deleting'] };
/** A pod state as kts records it, or crictl's ready / notready. */
const POD_STATES = ['created', 'starting', 'ready', 'unhealthy', 'failed', 'stopping', 'stopped'];
const CRICTL_POD_STATES: Record<string, string[]> = { notready: POD_STATES.filter((state) => state !== 'ready') };

function statesNamed(flag: string, text: string, own: string[], crictl: Record<string, string[]>): string[] {
  const wanted = text.toLowerCase().replace(/^(container_|sandbox_)/, '').replace('_', '');
  const states = own.includes(wanted) ? [wanted] : crictl[wanted];
  if (!states) throw new UsageError(`${flag} must be one of ${[...own, ...Object.keys(crictl)].join(', ')} (got "${text}")`);
  return states;
}

/** `--name` as crictl takes it: a regular expression matched anywhere in the name. */
function nameMatcher(text: string | undefined): (name: string) => boolean {
  if (text === undefined) return () => true;
  try {
    const pattern = new RegExp(text);
    return (name) => pattern.test(name);
  } catch {
    throw new UsageError(`--name must be a regular expression (got "${text}")`);
  }
}

/** `--label key=value` (repeated: all must match). */
export function parseLabels(texts: string[] = []): Record<string, string> {
  return Object.fromEntries(texts.map((text) => {
    const at = text.indexOf('=');
    if (at <= 0) throw new UsageError(`--label must be key=value (got "${text}")`);
    return [text.slice(0, at), text.slice(at + 1)];
  }));
}

export interface PodFilter { name?: string; namespace?: string; state?: string; label?: string[] }

export function podFilter(filter: PodFilter): (pod: PodRow) => boolean {
  const states = filter.state === undefined ? undefined : statesNamed('--state', filter.state, POD_STATES, CRICTL_POD_STATES);
  const name = nameMatcher(filter.name);
  const labels = Object.entries(parseLabels(filter.label));
  return (pod) => name(pod.name) && (filter.namespace === undefined || pod.namespace === filter.namespace)
    && (states === undefined || states.includes(pod.state)) && labels.every(([key, value]) => pod.labels[key] === value);
}

export interface ContainerFilter { all?: boolean; name?: string; state?: string; label?: string[] }

/** Without --all or --state, what runs (crictl's default); exited ones only with --all. */
export function containerFilter(filter: ContainerFilter): (container: ContainerRow) => boolean {
  const states = filter.state !== undefined ? statesNamed('--state', filter.state, CONTAINER_STATES, CRICTL_CONTAINER_STATES)
    : filter.all ? undefined : CONTAINER_STATES.filter((state) => !CRICTL_CONTAINER_STATES.exited!.includes(state));
  const name = nameMatcher(filter.name);
  const labels = Object.entries(parseLabels(filter.label));
  return (container) => name(container.name) && (states === undefined || states.includes(container.state))
    && labels.every(([key, value]) => container.labels[key] === value);
}

/** "512B", "3.4KiB", "12.0MiB", "1.5GiB". */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value}B` : `${value.toFixed(1)}${units[unit]}`;
}

export interface StatsSample { id: string; cpuUsageNanos: number; time: string }

/** CPU use between two samples of the same container or pod, in percent of one CPU (crictl's CPU %); null without an earlier sample. */
export function cpuPercent(before: StatsSample | undefined, after: StatsSample): number | null {
  if (!before) return null;
  const wallNanos = (new Date(after.time).getTime() - new Date(before.time).getTime()) * 1e6;
  if (wallNanos <= 0) return null;
  return Math.max(0, ((after.cpuUsageNanos - before.cpuUsageNanos) / wallNanos) * 100);
}

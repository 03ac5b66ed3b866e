import { randomBytes } from 'node:crypto';
import { existsSync, fstatSync, readFileSync, writeFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { Command, Option } from 'commander';
import { DEFAULT_CONFIG_PATH, DEFAULT_SOCKET, loadConfig } from '../config.js';
import { errorMessage } from '../core/errors.js';
import { NETWORK_ANNOTATION, NETWORK_CHOICES } from '../core/podNetwork.js';
import { auditFromVerifyResponse, describeAudit, describeSlice } from './chainReport.js';
import { checkAudit, withDerived, type AuditReport, type TrustAnchors } from '../audit/auditCheck.js';
import { publicKeyFileOf, readPublicKey } from '../audit/auditKey.js';
import { readHeadFile } from '../audit/checkpoints.js';
import { headFileOf } from '../audit/config.js';
import { verifySlice } from '../audit/exportSlice.js';
import { ClientError, connectClient, encodePodSandboxConfig, socketPath, type KtsClient } from './client.js';
import { ago, formatTable } from './format.js';
import { containerFilter, cpuPercent, formatBytes, podFilter, UsageError, type ContainerRow, type PodRow, type StatsSample } from './listings.js';
import { KTS_VERSION } from '../version.js';
import { sinceTime } from './since.js';
import { callerSummary, parseCaller } from '../grpc/caller.js';
import { newTraceparent, tracingExports } from '../telemetry/traceparent.js';
import { buildTimeline, renderTimeline } from './timeline.js';

const out = (text: string) => process.stdout.write(text);

/** A whole number of at least `min` given to `flag`, or a UsageError naming both. */
function wholeNumber(flag: string, text: string, min = 0): number {
  const value = /^\d+$/.test(text.trim()) ? Number(text) : NaN;
  if (!Number.isSafeInteger(value) || value < min) throw new UsageError(`${flag} must be a whole number of at least ${min} (got "${text}")`);
  return value;
}

/** `a,b, c` as ['a', 'b', 'c']; nothing given is the empty list. */
const commaList = (text: string | undefined) => (text ?? '').split(',').map((item) => item.trim()).filter((item) => item !== '');

/** --socket given before the command (kts --socket P pods), as crictl takes --runtime-endpoint. */
let globalSocket: string | undefined;

/**
 * The command's own trace: every call it makes carries this traceparent, and its root span is exported
 * when it ends (endCommandTrace). Absent with OTEL_SDK_DISABLED=true, and for `kts daemon`.
 */
let commandTrace: { name: string; traceparent: string; startUnixMs: number; socket?: string; daemonExports?: boolean } | undefined;

/** Runs a client command against the daemon; errors become one line on stderr and exit code 1. */
async function withClient<T>(options: { socket?: string }, work: (client: KtsClient) => Promise<T>): Promise<T> {
  const socket = socketPath(options.socket ?? globalSocket);
  if (commandTrace) commandTrace.socket ??= socket;
  const client = connectClient(socket, commandTrace ? { traceparent: commandTrace.traceparent } : {});
  try {
    return await work(client);
  } finally {
    if (commandTrace && client.daemonExportsTraces()) commandTrace.daemonExports = true;
    client.close();
  }
}

const socketOption = () => new Option('--socket <path>', 'daemon socket (default: $KTS_SOCKET or ' + DEFAULT_SOCKET + ')');

/** The pod a ref names (id, unique id prefix, name, namespace/name), and the container if it named one. */
async function resolve(client: KtsClient, ref: string): Promise<{ sandboxId: string; containerId?: string }> {
  const resolved = await client.admin.Resolve!({ ref });
  return { sandboxId: String(resolved.sandboxId), ...(resolved.containerId ? { containerId: String(resolved.containerId) } : {}) };
}

async function resolvePod(client: KtsClient, ref: string): Promise<string> {
  return (await resolve(client, ref)).sandboxId;
}

/** A container's full id from its id or a unique prefix; a ref that names a pod is an error saying so. */
async function resolveContainer(client: KtsClient, ref: string): Promise<string> {
  const { sandboxId, containerId } = await resolve(client, ref);
  if (containerId === undefined) throw new ClientError(`"${ref}" is pod ${sandboxId}, not a container (kts ps --pod ${ref} lists its containers)`);
  return containerId;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

function podRows(sandboxes: Array<Record<string, unknown>>): PodRow[] {
  return sandboxes.map((s) => {
    const metadata = JSON.parse(String(s.metadataJson || '{}')) as { labels?: Record<string, string> };
    return {
      id: String(s.id), name: String(s.name), namespace: String(s.namespace), kind: String(s.kind), state: String(s.state), pid: Number(s.pid),
      createdAt: String(s.createdAt), ips: Array.isArray(s.ips) ? s.ips.map(String) : [], netnsPath: String(s.netnsPath ?? ''), labels: metadata.labels ?? {},
    };
  });
}

function containerRows(containers: Array<Record<string, unknown>>): ContainerRow[] {
  return containers.map((c) => ({
    id: String(c.id), name: String(c.name), podId: String(c.sandboxId), state: String(c.state), pid: Number(c.pid),
    exitCode: c.exited ? Number(c.exitStatus) : null, image: String(c.image), createdAt: String(c.createdAt),
    labels: (JSON.parse(String(c.metadataJson || '{}')) as { labels?: Record<string, string> }).labels ?? {},
  }));
}

/** --json, -q or a table: how every listing prints. */
function printListing<T extends { id: string }>(rows: T[], options: { json?: boolean; quiet?: boolean }, headers: string[], cells: (row: T) => string[]): void {
  if (options.json) return void out(JSON.stringify(rows, null, 2) + '\n');
  if (options.quiet) return void out(rows.map((row) => row.id + '\n').join(''));
  out(formatTable(headers, rows.map(cells)));
}

function program(): Command {
  const cli = new Command('kts')
    .description('kuasar-ts: one daemon for many sandboxes, behind containerd\'s Sandbox and Task APIs, with every transition in an audited event log')
    .version(KTS_VERSION)
    .showHelpAfterError('(run "kts <command> --help" for usage)')
    .addOption(socketOption())
    .hook('preAction', (command, action) => {
      globalSocket = (command.opts() as { socket?: string }).socket;
      const names: string[] = [];
      for (let c: Command | null = action; c; c = c.parent) names.unshift(c.name());
      if (process.env.OTEL_SDK_DISABLED !== 'true' && action.name() !== 'daemon') {
        commandTrace = { name: names.join(' '), traceparent: newTraceparent(), startUnixMs: performance.timeOrigin + performance.now() };
      }
    })
    .addHelpText('after', `
Examples:
  kts daemon --root /var/lib/kts                      serve on ${DEFAULT_SOCKET}
  kts run examples/pod.yaml examples/busybox.yaml     start a pod with one container
  kts pods -o wide; kts ps -a --json                  list them (wide: with pod IPs; -a: exited containers too)
  kts pods -q --namespace default; kts ps -q --state exited    ids only, filtered
  kts inspect <pod|container>                         its record: network setup, backend details, containers
  kts logs --tail 20 <container>; kts exec <container> -- ls /   look inside
  echo hi | kts exec <container> cat                  stdin from a pipe or file (or -i)
  kts exec -it <container> -- sh                      a shell on a terminal, as crictl exec -it
  kts stats; kts statsp                               CPU and memory of containers, of pods
  kts history <pod>                                   every transition, with trace ids
  kts audit verify; kts audit export --pod <pod>      check the log and its signed checkpoints; export a pod's events
  kts stop <pod|container>; kts rm <pod|container>    stop, then remove
  kts version; kts info; kts images                   the daemon: version, config, event log head; its images

Client commands find the daemon with --socket PATH (before or after the command), else $KTS_SOCKET,
else ${DEFAULT_SOCKET}. A pod or container is named by its id, a unique prefix of it (what "kts pods"
and "kts ps" print), or, for pods, its name or namespace/name. Bad input exits 2, a refused request 1.`);

  cli.command('daemon')
    .description('run the daemon: gRPC on a unix socket (Sandbox Controller, Task v2/v3, kts admin)')
    .option('--config <file>', `TOML config (default ${DEFAULT_CONFIG_PATH} if it exists)`)
    .option('--listen <socket>', 'unix socket to serve on')
    .option('--root <dir>', 'state directory (sandboxes, images, database)')
    .option('--db <file>', 'SQLite event store (default <root>/kts.db)')
    .action(async (options: { config?: string; listen?: string; root?: string; db?: string }) => {
      const config = loadConfig(options.config, { listen: options.listen, root: options.root, db: options.db });
      // Loaded here, not at the top: every other command starts faster without the daemon's modules.
      const [{ startDaemon }, { createLogger }] = await Promise.all([import('../daemon.js'), import('../telemetry/logger.js')]);
      const logger = createLogger(config.logLevel);
      const daemon = await startDaemon(config, logger);
      let stopping = false;
      const stop = async (signal: string) => {
        if (stopping) return;
        stopping = true;
        logger.info({ signal }, 'stopping: sandboxes keep running and are reattached on the next start');
        await daemon.close();
        process.exit(0);
      };
      process.on('SIGTERM', () => void stop('SIGTERM'));
      process.on('SIGINT', () => void stop('SIGINT'));
    });

  cli.command('task-relay')
    .description('relay containerd\'s ttrpc task connections to the daemon across its restarts (the daemon starts it with task_relay = true)')
    .requiredOption('--listen <socket>', 'the socket containerd dials (the daemon\'s Task address)')
    .requiredOption('--upstream <socket>', 'the daemon\'s own ttrpc socket')
    .action(async (options: { listen: string; upstream: string }) => {
      const [{ runTaskRelay }, { createLogger }] = await Promise.all([import('../api/taskRelay.js'), import('../telemetry/logger.js')]);
      const stop = new AbortController();
      process.once('SIGTERM', () => stop.abort());
      process.once('SIGINT', () => stop.abort());
      await runTaskRelay({ listen: options.listen, upstream: options.upstream, logger: createLogger('info'), stop: stop.signal });
      process.exit(0);
    });

  cli.command('run')
    .description('start a pod and one container in it, like "crictl run"; prints the container id. A pod whose container is refused is removed again; one that fails to start stays, failed, for kts history')
    .argument('<pod.yaml>', 'pod config (crictl format: metadata.name, namespace, hostname, labels…)')
    .argument('<container.yaml>', 'container config (crictl format: metadata.name, image.image, command, args, envs…)')
    .option('--runtime <kind>', 'sandbox kind (default: the daemon\'s default_sandbox_kind, runc)')
    .addOption(new Option('--network <mode>', 'cni: a CNI network (an error if the daemon does not run CNI); none: loopback only (default: the daemon\'s [network] cni)').choices(NETWORK_CHOICES))
    .option('--json', 'print {"podId", "containerId", "pid"} as JSON')
    .addOption(socketOption())
    .action(async (podFile: string, containerFile: string, options: { runtime?: string; network?: string; json?: boolean; socket?: string }) => {
      const { readContainerConfigFile, readPodSandboxConfigFile } = await import('../oci/podConfig.js');
      const pod = await readPodSandboxConfigFile(podFile);
      const container = await readContainerConfigFile(containerFile);
      const startPod = async (client: KtsClient) => {
        const sandboxId = randomBytes(16).toString('hex');
        const annotations = options.network ? { [NETWORK_ANNOTATION]: options.network } : {};
        await client.controller.Create!({ sandboxId, options: encodePodSandboxConfig(pod), sandboxer: options.runtime ?? '', annotations });
        await client.controller.Start!({ sandboxId });
        // A pod whose container is refused (bad image, mount, resources) goes again rather than idling empty.
        const removePod = (error: unknown) => client.controller.Shutdown!({ sandboxId }).then(() => Promise.reject(error), () => Promise.reject(error));
        const run = await client.admin.RunContainer!({
          sandboxId, name: container.metadata.name, image: container.image.image, command: container.command, args: container.args,
          env: Object.fromEntries(container.envs.map((kv) => [kv.key, kv.value])), workingDir: container.workingDir ?? '', labels: container.labels, start: true,
          resources: container.linux.resources, mounts: container.mounts, annotations: container.annotations,
        }).catch(removePod);
        return { podId: sandboxId, containerId: String(run.containerId), pid: Number(run.pid) };
      };
      const result = await withClient(options, startPod);
      out(options.json ? JSON.stringify(result) + '\n' : `${result.containerId}\n`);
    });

  cli.command('pods')
    .description('list pods (sandboxes) that are not removed')
    .option('-q, --quiet', 'only their full ids, one a line')
    .option('--name <regexp>', 'only pods whose name matches')
    .option('--namespace <namespace>', 'only pods in this namespace')
    .option('--state <state>', 'only pods in this state: ready, notready, or a kts state (starting, stopped, failed…)')
    .option('--label <key=value>', 'only pods with this label (repeat: all of them)', collect)
    .option('--json', 'print an array of pods (same as -o json)')
    .addOption(new Option('-o, --output <format>', 'wide: also the pod IPs and netns; json: an array of pods').choices(['wide', 'json']))
    .addOption(socketOption())
    .addHelpText('after', '\nExamples:\n  kts pods --namespace default --state ready\n  kts pods -q --label app=web | xargs -n1 kts stop')
    .action(async (options: { quiet?: boolean; name?: string; namespace?: string; state?: string; label?: string[]; json?: boolean; output?: string; socket?: string }) => {
      const wanted = podFilter(options);
      await withClient(options, async (client) => {
        const { sandboxes } = (await client.admin.ListSandboxes!({})) as { sandboxes: Array<Record<string, unknown>> };
        const wide = options.output === 'wide';
        printListing(podRows(sandboxes).filter(wanted), { json: options.json || options.output === 'json', quiet: options.quiet },
          ['POD ID', 'NAME', 'NAMESPACE', 'KIND', 'STATE', ...(wide ? ['IP', 'NETNS'] : []), 'CREATED'],
          (p) => [p.id.slice(0, 13), p.name, p.namespace, p.kind, p.state, ...(wide ? [p.ips.join(',') || '-', p.netnsPath || '-'] : []), ago(p.createdAt)]);
      });
    });

  cli.command('inspect')
    .description('a pod as its event log leaves it, as JSON: state, metadata, network (netns, CNI interfaces, IPs, routes), backend details (a VM\'s mirrored interfaces), containers; given a container\'s id, that container\'s own record')
    .argument('<pod|container>', 'pod id (or unique prefix), name or namespace/name; or a container id (or unique prefix)')
    .addOption(socketOption())
    .action(async (ref: string, options: { socket?: string }) => withClient(options, async (client) => {
      const inspected = await client.admin.Inspect!({ ref });
      if (inspected.containerJson) return void out(JSON.stringify(JSON.parse(String(inspected.containerJson)), null, 2) + '\n');
      const containers = (inspected.containers as Array<Record<string, unknown>>).map((c) => ({ id: c.id, name: c.name, state: c.state, pid: c.pid, image: c.image }));
      out(JSON.stringify({ ...(JSON.parse(String(inspected.stateJson)) as Record<string, unknown>), containers }, null, 2) + '\n');
    }));

  cli.command('ps')
    .description('list containers: those not exited (as crictl ps), or with -a every one not removed')
    .option('-a, --all', 'also exited containers')
    .option('-q, --quiet', 'only their ids, one a line')
    .option('--pod <pod>', 'only the containers of this pod (id, unique id prefix, name or namespace/name)')
    .option('--name <regexp>', 'only containers whose name matches')
    .option('--state <state>', 'only containers in this state: created, running, exited, or a kts state (stopped, failed…)')
    .option('--label <key=value>', 'only containers with this label (repeat: all must match)', collect)
    .option('--json', 'print an array of containers: id, name, podId, state, pid, exitCode, image, createdAt, labels')
    .addOption(socketOption())
    .addHelpText('after', '\nExamples:\n  kts ps -a --pod busybox-pod\n  kts ps --label app=web\n  kts ps -q --state exited | xargs -n1 kts rm')
    .action(async (options: { all?: boolean; quiet?: boolean; pod?: string; name?: string; state?: string; label?: string[]; json?: boolean; socket?: string }) => {
      const wanted = containerFilter(options);
      await withClient(options, async (client) => {
        const sandboxId = options.pod === undefined ? '' : await resolvePod(client, options.pod);
        const { containers } = (await client.admin.ListContainers!({ sandboxId })) as { containers: Array<Record<string, unknown>> };
        printListing(containerRows(containers).filter(wanted), options, ['CONTAINER', 'NAME', 'POD ID', 'STATE', 'PID', 'EXIT', 'IMAGE', 'CREATED'],
          (c) => [c.id, c.name, c.podId.slice(0, 13), c.state, c.pid ? String(c.pid) : '-', c.exitCode === null ? '-' : String(c.exitCode), c.image, ago(c.createdAt)]);
      });
    });

  cli.command('logs')
    .description('print a container\'s output (stdout and stderr)')
    .argument('<container>', 'container id or a unique prefix of it')
    .option('-f, --follow', 'keep printing until the container exits')
    .option('--tail <lines>', 'only the last N lines (then, with -f, what follows)')
    .option('-t, --timestamps', 'begin each line with the time it was written (RFC3339Nano)')
    .option('--since <time>', 'only lines written since an RFC3339 time or for a duration back (10s, 5m, 1h)')
    .addOption(socketOption())
    .addHelpText('after', '\nExamples:\n  kts logs --tail 20 busybox-8b2a\n  kts logs -f --tail 0 busybox-8b2a     only what comes from now on\n  kts logs --timestamps --since 5m busybox-8b2a'
      + '\n\nTimes are kept for containers made by this version on (a log in CRI\'s format); an older container\'s log has none.')
    .action(async (ref: string, options: { follow?: boolean; tail?: string; timestamps?: boolean; since?: string; socket?: string }) => {
      const tailLines = options.tail === undefined ? undefined : wholeNumber('--tail', options.tail);
      const since = options.since === undefined ? '' : sinceTime(options.since);
      await withClient(options, async (client) => {
        const containerId = await resolveContainer(client, ref);
        const request = { containerId, follow: Boolean(options.follow), tail: tailLines !== undefined, tailLines: tailLines ?? 0, timestamps: Boolean(options.timestamps), since };
        await client.adminStream('Logs', request, (chunk) => process.stdout.write(chunk.data as Buffer));
      });
    });

  cli.command('exec')
    .description('run a command in a running container and print its output; exits with its exit code. Its stdin is what is piped or redirected into kts (or, with -i, what is typed up to ^D), read whole first, at most 4 MiB. With -t it runs on a terminal instead, as with "crictl exec -it": input and output flow as it runs (runc pods only)')
    .argument('<container>', 'container id or a unique prefix of it')
    .argument('<command...>', 'the command and its arguments (put them after --)')
    .option('-i, --stdin', 'pass stdin also when it is a terminal (read to its end before the command runs; with -t, as it is typed)')
    .option('-t, --tty', 'run it on a terminal the size of the local one, resized with it (with -i, stdin is raw while it runs); without a local terminal it gets one all the same, as with crictl')
    .addOption(socketOption())
    .addHelpText('after', '\nExamples:\n  kts exec busybox-8b2a -- ls /\n  echo hi | kts exec busybox-8b2a cat\n  kts exec -i busybox-8b2a -- sh < script.sh\n  kts exec -it busybox-8b2a -- sh          a shell; exit (or ^D) ends it, with its exit code')
    .action(async (ref: string, command: string[], options: { stdin?: boolean; tty?: boolean; socket?: string }) => withClient(options, async (client) => {
      const containerId = await resolveContainer(client, ref);
      if (options.tty) {
        const { execInTerminal } = await import('./terminal.js');
        return void (process.exitCode = await execInTerminal(client, { containerId, args: command, stdin: Boolean(options.stdin) }));
      }
      const stdin = options.stdin || stdinIsData() ? await readStdin(MAX_EXEC_STDIN_BYTES) : Buffer.alloc(0);
      const result = await client.admin.Exec!({ containerId, args: command, stdin });
      process.stdout.write(result.stdout as Buffer);
      process.stderr.write(result.stderr as Buffer);
      process.exitCode = Number(result.exitStatus);
    }));

  cli.command('stop')
    .description('stop a pod (kill its containers and its sandbox) or one container; the record stays until rm')
    .argument('<pod|container>', 'pod id (or unique prefix), name or namespace/name; or a container id (or unique prefix)')
    .option('--timeout <seconds>', 'grace period before SIGKILL', '10')
    .addOption(socketOption())
    .addHelpText('after', '\nExamples:\n  kts stop busybox-pod\n  kts stop --timeout 0 busybox-8b2a      one container, SIGKILL at once')
    .action(async (ref: string, options: { timeout: string; socket?: string }) => {
      const timeoutSecs = wholeNumber('--timeout', options.timeout);
      await withClient(options, async (client) => {
        const { sandboxId, containerId } = await resolve(client, ref);
        if (containerId !== undefined) await client.admin.StopContainer!({ containerId, timeoutSecs });
        else await client.controller.Stop!({ sandboxId, timeoutSecs });
        out(`${containerId ?? sandboxId}\n`);
      });
    });

  cli.command('rm')
    .description('remove a pod (stop it if needed, delete its containers, processes, mounts and files) or one stopped container')
    .argument('<pod|container>', 'pod id (or unique prefix), name or namespace/name; or a container id (or unique prefix)')
    .option('-f, --force', 'a running container: stop it first (SIGKILL)')
    .addOption(socketOption())
    .addHelpText('after', '\nExamples:\n  kts rm busybox-pod\n  kts rm -f busybox-8b2a')
    .action(async (ref: string, options: { force?: boolean; socket?: string }) => withClient(options, async (client) => {
      const { sandboxId, containerId } = await resolve(client, ref);
      if (containerId !== undefined) await client.admin.RemoveContainer!({ containerId, force: Boolean(options.force) });
      else await client.controller.Shutdown!({ sandboxId });
      out(`${containerId ?? sandboxId}\n`);
    }));

  cli.command('history')
    .description('every transition of a pod and its containers from the event log, and whether the hash chain verifies')
    .argument('<pod>', 'pod id, name, namespace/name, or one of its container ids')
    .option('--json', 'print the events as a JSON array')
    .option('--type <types>', 'only these event types, comma-separated, exact or a prefix ending in * (e.g. "Container*,SandboxStarted")')
    .option('--since <time>', 'only events since an RFC3339 time or a duration ago (10m, 1h)')
    .addOption(socketOption())
    .addHelpText('after', '\nCAUSE is the call (or the daemon\'s own reason) that recorded the event. CALLER is who made the call:\nthe uid and pid the kernel gave for its connection, its command name, and the user agent it sent\n(--json has the whole caller string, with gid, the OS user the client claimed and containerd\'s namespace).\n\nExamples:\n  kts history busybox-pod\n  kts history busybox-pod --type "Container*" --since 1h')
    .action(async (ref: string, options: { json?: boolean; type?: string; since?: string; socket?: string }) => withClient(options, async (client) => {
      const history = await client.admin.History!({ ref, types: commaList(options.type), since: options.since === undefined ? '' : sinceTime(options.since) });
      const events = (history.events as Array<Record<string, string | number>>).map((e) => ({ ...e, payload: JSON.parse(String(e.payloadJson)) as unknown })) as Array<Record<string, unknown>>;
      if (options.json) return void out(JSON.stringify({ sandboxId: history.sandboxId, chainOk: history.chainOk, events }, null, 2) + '\n');
      out(formatTable(['SEQ', 'TIME', 'STREAM', 'EVENT', 'FROM → TO', 'CAUSE', 'CALLER', 'TRACE ID'],
        events.map((e) => [String(e.sequence), String(e.time), String(e.streamId), String(e.type), `${e.stateBefore} → ${e.stateAfter}`, parseCaller(String(e.caller)).cause, callerSummary(String(e.caller)), String(e.traceId) || '-'])));
      out(history.chainOk ? 'hash chain: verified\n' : `hash chain: BROKEN (${history.chainError})\n`);
      if (!history.chainOk) process.exitCode = 3;
    }));

  cli.command('timeline')
    .description('the start of a pod as a waterfall of phases from its event log, the slowest marked (for VM pods: QEMU + guest boot and the guest\'s own part too)')
    .argument('<pod>', 'pod id, name, namespace/name, or a container id (its timeline then ends at that container\'s start)')
    .option('--json', 'print {podId, containerId, totalMs, phases: [{name, phase, startMs, durationMs, slowest}]}; phase is the kts_pod_start_phase_duration_seconds label')
    .addOption(socketOption())
    .addHelpText('after', '\nExample:\n  kts timeline busybox-pod\n  kts timeline --json 3f0c…  | jq .phases')
    .action(async (ref: string, options: { json?: boolean; socket?: string }) => withClient(options, async (client) => {
      const history = await client.admin.History!({ ref });
      const events = (history.events as Array<Record<string, string>>).map((e) => ({ streamId: e.streamId!, type: e.type!, time: e.time!, payload: JSON.parse(e.payloadJson!) as Record<string, unknown> }));
      const named = events.some((e) => e.streamId === `container-${ref}`) ? ref : undefined;
      const timeline = buildTimeline(events, named);
      if (options.json) return void out(JSON.stringify({ podId: history.sandboxId, ...timeline }, null, 2) + '\n');
      if (timeline.phases.length === 0) return void out(`pod ${history.sandboxId} has not started yet\n`);
      out(`pod ${history.sandboxId}${timeline.containerId ? `, container ${timeline.containerId}` : ''}\n${renderTimeline(timeline)}`);
    }));

  cli.command('events')
    .description('stream events as they are recorded (JSON lines), from the log first when --after is given')
    .option('--after <sequence>', 'start after this sequence number (0 = from the beginning)', '0')
    .option('--pod <pod>', 'only this pod\'s events and its containers\' (id, name or namespace/name)')
    .option('--type <types>', 'only these event types, comma-separated, exact or a prefix ending in * (e.g. "Sandbox*")')
    .option('--kind <kind>', 'only events of pods of this sandbox kind (runc, vmm, wasm)')
    .addOption(socketOption())
    .addHelpText('after', '\nExamples:\n  kts events\n  kts events --after 0 --pod busybox-pod --type "Container*"\n  kts events --kind vmm --type SandboxStarted,SandboxStartFailed')
    .action(async (options: { after: string; pod?: string; type?: string; kind?: string; socket?: string }) => {
      const request = { afterSequence: wholeNumber('--after', options.after), pod: options.pod ?? '', types: commaList(options.type), kind: options.kind ?? '' };
      await withClient(options, (client) => client.adminStream('WatchEvents', request, (event) => out(JSON.stringify(event) + '\n')));
    });

  statsCommands(cli);
  infoCommands(cli);

  const audit = cli.command('audit').description('check and export the event log');
  verifyCommand(audit.command('verify'), 'verify the event log\'s hash chain end to end and its signed checkpoints (each signed by the audit key, each event there still with the signed hash, the log reaching the newest — from the database or head.json) and that replaying each stream gives its stored state and sealed snapshots (MISMATCH lines otherwise), name the first bad sequence, print the head; exits 0 if intact, 3 if broken, 1 if it could not check');
  verifyCommand(cli.command('verify'), 'same as "kts audit verify"');
  exportCommand(audit.command('export'));
  return cli;
}

function statsCommands(cli: Command): void {
  cli.command('stats')
    .description('CPU and memory of running containers (CPU %: of one CPU, over --seconds)')
    .argument('[container]', 'only this container (id or unique prefix)')
    .option('--pod <pod>', 'only the containers of this pod')
    .option('--seconds <n>', 'sample CPU use over this many seconds', '1')
    .option('--json', 'print an array of {id, podId, name, cpuPercent, cpuUsageNanos, memoryUsageBytes, memoryLimitBytes, pids, time}')
    .addOption(socketOption())
    .addHelpText('after', '\nExamples:\n  kts stats\n  kts stats --pod busybox-pod --json')
    .action(async (ref: string | undefined, options: { pod?: string; seconds: string; json?: boolean; socket?: string }) => {
      const seconds = wholeNumber('--seconds', options.seconds, 1);
      await withClient(options, async (client) => {
        const request = { sandboxId: options.pod === undefined ? '' : await resolvePod(client, options.pod), containerId: ref === undefined ? '' : await resolveContainer(client, ref) };
        const rows = await sampleStats(() => client.admin.ContainerStats!(request), seconds);
        printListing(rows, options, ['CONTAINER', 'NAME', 'POD ID', 'CPU %', 'MEM', 'MEM LIMIT', 'PIDS'],
          (r) => [r.id, r.name, r.podId.slice(0, 13), r.cpuPercent === null ? '-' : r.cpuPercent.toFixed(2), formatBytes(r.memoryUsageBytes), r.memoryLimitBytes ? formatBytes(r.memoryLimitBytes) : '-', String(r.pids)]);
      });
    });

  cli.command('statsp')
    .description('CPU and memory of ready pods: their running containers summed')
    .argument('[pod]', 'only this pod (id, unique id prefix, name or namespace/name)')
    .option('--seconds <n>', 'sample CPU use over this many seconds', '1')
    .option('--json', 'print an array of {id, podId, name, cpuPercent, cpuUsageNanos, memoryUsageBytes, memoryLimitBytes, pids, time}')
    .addOption(socketOption())
    .addHelpText('after', '\nExamples:\n  kts statsp\n  kts statsp busybox-pod --json')
    .action(async (ref: string | undefined, options: { seconds: string; json?: boolean; socket?: string }) => {
      const seconds = wholeNumber('--seconds', options.seconds, 1);
      await withClient(options, async (client) => {
        const request = { sandboxId: ref === undefined ? '' : await resolvePod(client, ref) };
        const rows = await sampleStats(() => client.admin.PodStats!(request), seconds);
        printListing(rows, options, ['POD ID', 'NAME', 'CPU %', 'MEM', 'PIDS'],
          (r) => [r.id.slice(0, 13), r.name, r.cpuPercent === null ? '-' : r.cpuPercent.toFixed(2), formatBytes(r.memoryUsageBytes), String(r.pids)]);
      });
    });
}

interface StatsRow extends StatsSample { podId: string; name: string; cpuPercent: number | null; memoryUsageBytes: number; memoryLimitBytes: number; pids: number }

/** Two readings `seconds` apart: CPU % from their difference, the rest from the second. */
async function sampleStats(read: () => Promise<Record<string, unknown>>, seconds: number): Promise<StatsRow[]> {
  const rows = async () => ((await read()).stats as Array<Record<string, unknown>>).map((s): StatsRow => ({
    id: String(s.id), podId: String(s.sandboxId), name: String(s.name), cpuPercent: null, cpuUsageNanos: Number(s.cpuUsageNanos),
    memoryUsageBytes: Number(s.memoryUsageBytes), memoryLimitBytes: Number(s.memoryLimitBytes), pids: Number(s.pidsCurrent), time: String(s.time),
  }));
  const first = new Map((await rows()).map((row) => [row.id, row]));
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  return (await rows()).map((row) => ({ ...row, cpuPercent: cpuPercent(first.get(row.id), row) }));
}

/** `[hypervisor] guest_oci_runtime` as `kts info` says it. */
function guestOciRuntimeOf(config: unknown): string {
  const choice = (config as { hypervisor?: { guestOciRuntime?: unknown } } | undefined)?.hypervisor?.guestOciRuntime;
  return choice === 'auto' || choice === undefined ? 'crun where the guest image has it, else runc' : String(choice);
}

function infoCommands(cli: Command): void {
  cli.command('version')
    .description('the versions of this client and of the daemon it reaches')
    .option('--json', 'print {"client": {"version"}, "daemon": {"version"}}')
    .addOption(socketOption())
    .action(async (options: { json?: boolean; socket?: string }) => {
      if (!options.json) out(`Client version: ${KTS_VERSION}\n`);
      await withClient(options, async (client) => {
        const daemonVersion = String((await client.admin.Info!({})).version);
        out(options.json ? JSON.stringify({ client: { version: KTS_VERSION }, daemon: { version: daemonVersion } }) + '\n' : `Daemon version: ${daemonVersion}\n`);
      });
    });

  cli.command('info')
    .description('the daemon: version, pid, sandbox kinds, its OCI runtime, the configuration in effect, the event log\'s head')
    .option('--json', 'print {version, pid, startedAt, kinds, defaultKind, ociRuntime, eventLog: {headSequence, headHash, headTime}, config}')
    .addOption(socketOption())
    .action(async (options: { json?: boolean; socket?: string }) => withClient(options, async (client) => {
      const info = await client.admin.Info!({});
      const result = {
        version: String(info.version), pid: Number(info.pid), startedAt: String(info.startedAt), kinds: (info.kinds as string[]).map(String), defaultKind: String(info.defaultKind),
        ociRuntime: String(info.ociRuntime ?? ''),
        eventLog: { headSequence: Number(info.headSequence), headHash: String(info.headHash), headTime: String(info.headTime) },
        config: JSON.parse(String(info.configJson || '{}')) as unknown,
      };
      if (options.json) return void out(JSON.stringify(result, null, 2) + '\n');
      out([
        `Version:        ${result.version}`, `Pid:            ${result.pid} (serving since ${result.startedAt})`,
        `Sandbox kinds:  ${result.kinds.join(', ')} (default ${result.defaultKind})`,
        `OCI runtime:    ${result.ociRuntime || 'unknown'} (runc pods); VM guests: ${guestOciRuntimeOf(result.config)}`,
        `Event log head: sequence ${result.eventLog.headSequence}${result.eventLog.headHash ? `, hash ${result.eventLog.headHash.slice(0, 16)}…, ${result.eventLog.headTime}` : ''}`,
        `Config:         ${JSON.stringify(result.config, null, 2).replace(/\n/g, '\n                ')}`,
      ].join('\n') + '\n');
    }));

  cli.command('images')
    .description('the images the daemon\'s image store holds (OCI layouts under [images] dir)')
    .option('-q, --quiet', 'only their manifest digests')
    .option('--json', 'print an array of {name, tag, manifestDigest}')
    .addOption(socketOption())
    .action(async (options: { quiet?: boolean; json?: boolean; socket?: string }) => withClient(options, async (client) => {
      const images = ((await client.admin.ListImages!({})).images as Array<Record<string, unknown>>)
        .map((i) => ({ name: String(i.name), tag: String(i.tag), manifestDigest: String(i.manifestDigest) }));
      if (options.json) return void out(JSON.stringify(images, null, 2) + '\n');
      printListing(images.map((i) => ({ ...i, id: i.manifestDigest })), options, ['IMAGE', 'TAG', 'DIGEST'], (i) => [i.name, i.tag, i.manifestDigest.slice(0, 19)]);
    }));
}

/** What `kts exec` passes as stdin: a pipe or a file (`echo hi | kts exec …`, `< file`), not a terminal or a socket someone left open. */
function stdinIsData(): boolean {
  try {
    const stats = fstatSync(0);
    return stats.isFIFO() || stats.isFile();
  } catch {
    return false;
  }
}

const MAX_EXEC_STDIN_BYTES = 4 * 1024 * 1024;

async function readStdin(maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) throw new UsageError(`stdin holds more than ${maxBytes / 1024 / 1024} MiB; kts exec passes at most that`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function verifyCommand(command: Command, description: string): void {
  command.description(description)
    .addOption(new Option('--db <file>', 'verify this database file directly, read-only, without a daemon (e.g. one the daemon refuses)').conflicts('socket'))
    .addOption(new Option('--file <export>', 'verify a slice written by "kts audit export", without a daemon or a database').conflicts(['socket', 'db']))
    .option('--key <pub>', 'offline: the audit public key (PEM) to check signatures with (default: [audit] key_file + ".pub" of --config)')
    .option('--head <file>', 'offline: a head.json kept by the daemon (default: head.json beside [audit] key_file, if it exists)')
    .option('--config <file>', `offline: the daemon's TOML config, for the default --key and --head (default ${DEFAULT_CONFIG_PATH} if it exists)`)
    .option('--json', 'print the report as JSON (chain, head, newestCheckpoint, checkpointCount, keyId, broken, notes)')
    .addOption(socketOption())
    .addHelpText('after', [
      '', 'Examples:', '  kts audit verify', '  kts audit verify --db /backup/kts.db --key /safe/ed25519.key.pub --head /safe/head.json',
      '  kts audit verify --file pod.jsonl --key /safe/ed25519.key.pub',
      '', 'Events after the newest checkpoint are vouched for by nothing outside the database: keep head.json, the',
      '"audit checkpoint" log lines or the kts_audit_checkpoint_info metric elsewhere to catch their removal.',
    ].join('\n'))
    .action(auditVerify);
}

interface VerifyOptions { db?: string; file?: string; key?: string; head?: string; config?: string; json?: boolean; socket?: string }

async function auditVerify(options: VerifyOptions): Promise<void> {
  if (options.file !== undefined) {
    const raw = readFileSync(options.file);
    // A retention archive is gzipped; an export is plain text.
    const text = raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw).toString('utf8') : raw.toString('utf8');
    const slice = verifySlice(text, readPublicKey(offlineKeyPath(options)));
    out(options.json ? JSON.stringify(slice, null, 2) + '\n' : describeSlice(slice));
    if (!slice.ok) process.exitCode = 3;
    return;
  }
  const report: AuditReport = options.db !== undefined ? await verifyStoreOffline(options.db, offlineAnchors(options))
    : await withClient(options, async (client) => auditFromVerifyResponse(await client.admin.Verify!({})));
  out(options.json ? JSON.stringify(report, null, 2) + '\n' : describeAudit(report));
  if (!report.ok) process.exitCode = 3;
}

/** The store file read-only: its chain against the checkpoints and anchors, its snapshots and rows against a replay. */
async function verifyStoreOffline(db: string, anchors: TrustAnchors): Promise<AuditReport> {
  const [{ readStoreFile }, { checkDerivedState }, { withUnsealedSnapshots }] = await Promise.all([
    import('../store/sqliteStore.js'), import('../engine/derivedState.js'), import('../audit/sealedSnapshots.js'),
  ]);
  return readStoreFile(db, (store) => withDerived(checkAudit(store, anchors), checkDerivedState(withUnsealedSnapshots(store))));
}

const configuredKeyFile = (options: VerifyOptions) => loadConfig(options.config).audit.keyFile;
const offlineKeyPath = (options: VerifyOptions) => options.key ?? publicKeyFileOf(configuredKeyFile(options));

/** The key and head file given, or the configured ones where they exist (a key named but missing is an error). */
function offlineAnchors(options: VerifyOptions): TrustAnchors {
  const keyPath = offlineKeyPath(options);
  const headPath = options.head ?? headFileOf(configuredKeyFile(options));
  const publicKey = options.key !== undefined || existsSync(keyPath) ? readPublicKey(keyPath) : undefined;
  return { publicKey, noKeyReason: `no public key at ${keyPath} (give --key)`, headFile: { path: headPath, checkpoint: readHeadFile(headPath, options.head !== undefined) } };
}

function exportCommand(command: Command): void {
  command.description('write the events (of a pod, of some types, since a time) as JSON lines with their hashes, then the signed checkpoint that covers them; "kts audit verify --file" checks the result offline')
    .option('--pod <pod>', 'only events of this pod and its containers')
    .option('--type <types>', 'only these event types, comma-separated; a trailing * matches a prefix')
    .option('--since <time>', 'only events since an RFC3339 time or a duration ago (10m, 1h)')
    .option('--out <file>', 'write to this file (default: stdout)')
    .addOption(socketOption())
    .addHelpText('after', '\nExamples:\n  kts audit export --pod busybox-pod --out pod.jsonl\n  kts audit verify --file pod.jsonl --key /var/lib/kts/audit/ed25519.key.pub')
    .action(async (options: { pod?: string; type?: string; since?: string; out?: string; socket?: string }) => {
      const request = { pod: options.pod ?? '', types: commaList(options.type), since: options.since === undefined ? '' : sinceTime(options.since) };
      const lines: string[] = [];
      await withClient(options, (client) => client.adminStream('Export', request, (line) => {
        if (options.out === undefined) out(`${String(line.json)}\n`);
        else lines.push(String(line.json));
      }));
      if (options.out !== undefined) writeFileSync(options.out, lines.map((line) => `${line}\n`).join(''), { mode: 0o600 });
    });
}

export async function main(argv: string[]): Promise<void> {
  // Piped into `head`: the reader left, so the rest has nowhere to go; end quietly.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
    throw error;
  });
  try {
    await program().parseAsync(argv);
    await endCommandTrace(undefined);
  } catch (error) {
    const message = error instanceof ClientError ? error.message : errorMessage(error);
    await endCommandTrace(message, error instanceof ClientError ? error.grpcCode : undefined);
    process.stderr.write(`kts: ${message}\n`);
    process.exitCode = error instanceof UsageError ? 2 : process.exitCode && process.exitCode !== 0 ? process.exitCode : 1;
  }
}

/**
 * Exports the root span of a command that reached the daemon: itself when OTEL_EXPORTER_OTLP_* asks it to
 * (loading the tracing SDK only then), otherwise through the daemon (Admin.RecordClientSpan), which exports
 * it, when its replies said it exports its own spans. Never fails the command: a daemon that cannot take it is not asked twice.
 */
async function endCommandTrace(error: string | undefined, grpcCode?: number): Promise<void> {
  const trace = commandTrace;
  commandTrace = undefined;
  if (!trace?.socket) return;
  const record = {
    traceparent: trace.traceparent, name: trace.name, startUnixMs: trace.startUnixMs, endUnixMs: performance.timeOrigin + performance.now(),
    error: error ?? '', grpcStatusCode: grpcCode ?? 0, clientVersion: KTS_VERSION,
  };
  if (tracingExports(process.env)) {
    const [{ initTracing, exportForeignSpans, shutdownTracing }, { clientRootSpan }] = await Promise.all([import('../telemetry/tracing.js'), import('../telemetry/clientSpans.js')]);
    initTracing('kts-cli');
    exportForeignSpans([clientRootSpan(record)]);
    return shutdownTracing();
  }
  // A daemon that exports nothing would drop it: no call for it (a few ms of every command).
  if (!trace.daemonExports) return;
  const client = connectClient(trace.socket);
  await client.admin.RecordClientSpan!(record, { deadlineMs: 1000 }).catch(() => undefined).finally(() => client.close());
}

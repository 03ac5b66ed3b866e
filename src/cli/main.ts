import { randomBytes } from 'node:crypto';
import { Command, Option } from 'commander';
import { DEFAULT_CONFIG_PATH, DEFAULT_SOCKET, loadConfig } from '../config.js';
import { errorMessage } from '../core/errors.js';
import { NETWORK_ANNOTATION, NETWORK_CHOICES } from '../core/podNetwork.js';
import { chainFromVerifyResponse, describeChain } from './chainReport.js';
import { ClientError, connectClient, socketPath, type KtsClient } from './client.js';
import { ago, formatTable } from './format.js';
import { newTraceparent, tracingExports } from '../telemetry/propagation.js';
import { buildTimeline, renderTimeline } from './timeline.js';

const out = (text: string) => process.stdout.write(text);

/** Bad input on the command line: one line on stderr, exit code 2. */
class UsageError extends Error {}

/** A whole number of at least `min` given to `flag`, or a UsageError naming both. */
function wholeNumber(flag: string, text: string, min = 0): number {
  const value = /^\d+$/.test(text.trim()) ? Number(text) : NaN;
  if (!Number.isSafeInteger(value) || value < min) throw new UsageError(`${flag} must be a whole number of at least ${min} (got "${text}")`);
  return value;
}

/** --socket given before the command (kts --socket P pods), as crictl takes --runtime-endpoint. */
let globalSocket: string | undefined;

/** Runs a client command against the daemon; errors become one line on stderr and exit code 1. */
async function withClient<T>(options: { socket?: string; metadata?: Record<string, string> }, work: (client: KtsClient) => Promise<T>): Promise<T> {
  const client = connectClient(socketPath(options.socket ?? globalSocket), options.metadata);
  try {
    return await work(client);
  } finally {
    client.close();
  }
}

const socketOption = () => new Option('--socket <path>', 'daemon socket (default: $KTS_SOCKET or ' + DEFAULT_SOCKET + ')');

async function resolvePod(client: KtsClient, ref: string): Promise<string> {
  const history = await client.admin.History!({ ref });
  return String(history.sandboxId);
}

function program(): Command {
  const cli = new Command('kts')
    .description('kuasar-ts: one daemon for many sandboxes, behind containerd\'s Sandbox and Task APIs, with every transition in an audited event log')
    .version('0.1.0')
    .showHelpAfterError('(run "kts <command> --help" for usage)')
    .addOption(socketOption())
    .hook('preAction', (command) => { globalSocket = (command.opts() as { socket?: string }).socket; })
    .addHelpText('after', `
Examples:
  kts daemon --root /var/lib/kts                      serve on ${DEFAULT_SOCKET}
  kts run examples/pod.yaml examples/busybox.yaml     start a pod with one container
  kts pods -o wide; kts ps --json                     list them (wide: with pod IPs)
  kts inspect <pod>                                   its network setup, backend details, containers
  kts logs <container>; kts exec <container> -- ls /  look inside
  kts history <pod>                                   every transition, with trace ids
  kts stop <pod>; kts rm <pod>                        stop, then remove everything

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
      const { encodePodSandboxConfig } = await import('../api/protos.js');
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
      let result: Awaited<ReturnType<typeof startPod>>;
      if (tracingExports(process.env)) {
        const { initTracing, shutdownTracing, withSpan } = await import('../telemetry/tracing.js');
        initTracing('kts-cli');
        result = await withClient(options, (client) => withSpan('kts run', {}, () => startPod(client)));
        await shutdownTracing();
      } else {
        // One trace for the three calls without loading the tracing SDK: nothing here would export a span of ours.
        const metadata: Record<string, string> = process.env.OTEL_SDK_DISABLED === 'true' ? {} : { traceparent: newTraceparent() };
        result = await withClient({ ...options, metadata }, startPod);
      }
      out(options.json ? JSON.stringify(result) + '\n' : `${result.containerId}\n`);
    });

  cli.command('pods')
    .description('list pods (sandboxes) that are not removed')
    .option('--json', 'print an array of pods (same as -o json)')
    .addOption(new Option('-o, --output <format>', 'wide: also the pod IPs and netns; json: an array of pods').choices(['wide', 'json']))
    .addOption(socketOption())
    .action(async (options: { json?: boolean; output?: string; socket?: string }) => withClient(options, async (client) => {
      const { sandboxes } = (await client.admin.ListSandboxes!({})) as { sandboxes: Array<Record<string, unknown>> };
      const pods = sandboxes.map((s) => ({
        id: String(s.id), name: String(s.name), namespace: String(s.namespace), kind: String(s.kind), state: String(s.state), pid: Number(s.pid),
        createdAt: String(s.createdAt), ips: Array.isArray(s.ips) ? s.ips.map(String) : [], netnsPath: String(s.netnsPath ?? ''),
      }));
      if (options.json || options.output === 'json') return void out(JSON.stringify(pods, null, 2) + '\n');
      const wide = options.output === 'wide';
      const headers = ['POD ID', 'NAME', 'NAMESPACE', 'KIND', 'STATE', ...(wide ? ['IP', 'NETNS'] : []), 'CREATED'];
      out(formatTable(headers, pods.map((p) => [
        p.id.slice(0, 13), p.name, p.namespace, p.kind, p.state, ...(wide ? [p.ips.join(',') || '-', p.netnsPath || '-'] : []), ago(p.createdAt),
      ])));
    }));

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
    .description('list containers that are not deleted')
    .option('--pod <pod>', 'only the containers of this pod (id, unique id prefix, name or namespace/name)')
    .option('--json', 'print an array of containers: id, name, podId, state, pid, exitCode, image')
    .addOption(socketOption())
    .action(async (options: { pod?: string; json?: boolean; socket?: string }) => withClient(options, async (client) => {
      const sandboxId = options.pod === undefined ? '' : await resolvePod(client, options.pod);
      const { containers } = (await client.admin.ListContainers!({ sandboxId })) as { containers: Array<Record<string, string | number | boolean>> };
      const rows = containers.map((c) => ({
        id: String(c.id), name: String(c.name), podId: String(c.sandboxId), state: String(c.state), pid: Number(c.pid),
        exitCode: c.exited ? Number(c.exitStatus) : null, image: String(c.image), createdAt: String(c.createdAt),
      }));
      if (options.json) return void out(JSON.stringify(rows, null, 2) + '\n');
      out(formatTable(['CONTAINER', 'NAME', 'POD ID', 'STATE', 'PID', 'EXIT', 'IMAGE', 'CREATED'],
        rows.map((c) => [c.id, c.name, c.podId.slice(0, 13), c.state, c.pid ? String(c.pid) : '-', c.exitCode === null ? '-' : String(c.exitCode), c.image, ago(c.createdAt)])));
    }));

  cli.command('logs')
    .description('print a container\'s output (stdout and stderr)')
    .argument('<container>', 'container id')
    .option('-f, --follow', 'keep printing until the container exits')
    .addOption(socketOption())
    .action(async (containerId: string, options: { follow?: boolean; socket?: string }) => withClient(options, (client) =>
      client.adminStream('Logs', { containerId, follow: Boolean(options.follow) }, (chunk) => process.stdout.write(chunk.data as Buffer)),
    ));

  cli.command('exec')
    .description('run a command in a running container and print its output; exits with its exit code')
    .argument('<container>', 'container id')
    .argument('<command...>', 'the command and its arguments (put them after --)')
    .addOption(socketOption())
    .action(async (containerId: string, command: string[], options: { socket?: string }) => withClient(options, async (client) => {
      const result = await client.admin.Exec!({ containerId, args: command });
      process.stdout.write(result.stdout as Buffer);
      process.stderr.write(result.stderr as Buffer);
      process.exitCode = Number(result.exitStatus);
    }));

  cli.command('stop')
    .description('stop a pod: kill its containers and its sandbox (the record stays until rm)')
    .argument('<pod>', 'pod id, name or namespace/name')
    .option('--timeout <seconds>', 'grace period before SIGKILL', '10')
    .addOption(socketOption())
    .action(async (ref: string, options: { timeout: string; socket?: string }) => withClient(options, async (client) => {
      const timeoutSecs = wholeNumber('--timeout', options.timeout);
      const sandboxId = await resolvePod(client, ref);
      await client.controller.Stop!({ sandboxId, timeoutSecs });
      out(`${sandboxId}\n`);
    }));

  cli.command('rm')
    .description('remove a pod: stop it if needed, delete its containers, processes, mounts and files')
    .argument('<pod>', 'pod id, name or namespace/name')
    .addOption(socketOption())
    .action(async (ref: string, options: { socket?: string }) => withClient(options, async (client) => {
      const sandboxId = await resolvePod(client, ref);
      await client.controller.Shutdown!({ sandboxId });
      out(`${sandboxId}\n`);
    }));

  cli.command('history')
    .description('every transition of a pod and its containers from the event log, and whether the hash chain verifies')
    .argument('<pod>', 'pod id, name, namespace/name, or one of its container ids')
    .option('--json', 'print the events as a JSON array')
    .addOption(socketOption())
    .action(async (ref: string, options: { json?: boolean; socket?: string }) => withClient(options, async (client) => {
      const history = await client.admin.History!({ ref });
      const events = (history.events as Array<Record<string, string | number>>).map((e) => ({ ...e, payload: JSON.parse(String(e.payloadJson)) as unknown })) as Array<Record<string, unknown>>;
      if (options.json) return void out(JSON.stringify({ sandboxId: history.sandboxId, chainOk: history.chainOk, events }, null, 2) + '\n');
      out(formatTable(['SEQ', 'TIME', 'STREAM', 'EVENT', 'FROM → TO', 'CAUSE', 'TRACE ID'],
        events.map((e) => [String(e.sequence), String(e.time), String(e.streamId), String(e.type), `${e.stateBefore} → ${e.stateAfter}`, String(e.caller).split(' peer=')[0]!, String(e.traceId) || '-'])));
      out(history.chainOk ? 'hash chain: verified\n' : `hash chain: BROKEN (${history.chainError})\n`);
      if (!history.chainOk) process.exitCode = 3;
    }));

  cli.command('timeline')
    .description('the start of a pod as a waterfall of phases from its event log, the slowest marked (for VM pods: QEMU + guest boot and the guest\'s own part too)')
    .argument('<pod>', 'pod id, name, namespace/name, or a container id (its timeline then ends at that container\'s start)')
    .option('--json', 'print {podId, containerId, totalMs, phases: [{name, startMs, durationMs, slowest}]}')
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
    .description('stream events as they are recorded (JSON lines)')
    .option('--after <sequence>', 'start after this sequence number (0 = from the beginning)', '0')
    .addOption(socketOption())
    .action(async (options: { after: string; socket?: string }) => {
      const afterSequence = wholeNumber('--after', options.after);
      await withClient(options, (client) => client.adminStream('WatchEvents', { afterSequence }, (event) => out(JSON.stringify(event) + '\n')));
    });

  const audit = cli.command('audit').description('check the event log');
  verifyCommand(audit.command('verify'), 'verify the event log\'s hash chain end to end and name the first bad row; exits 0 if intact, 3 if broken, 1 if it could not check');
  verifyCommand(cli.command('verify'), 'same as "kts audit verify"');
  return cli;
}

function verifyCommand(command: Command, description: string): void {
  command.description(description)
    .addOption(new Option('--db <file>', 'verify this database file directly, read-only, without a daemon (e.g. one the daemon refuses)').conflicts('socket'))
    .addOption(socketOption())
    .action(auditVerify);
}

async function auditVerify(options: { db?: string; socket?: string }): Promise<void> {
  const verification = options.db !== undefined
    ? (await import('../store/sqliteStore.js')).verifyStoreFile(options.db)
    : await withClient(options, async (client) => chainFromVerifyResponse(await client.admin.Verify!({})));
  out(describeChain(verification) + '\n');
  if (!verification.ok) process.exitCode = 3;
}

export async function main(argv: string[]): Promise<void> {
  // Piped into `head`: the reader left, so the rest has nowhere to go; end quietly.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
    throw error;
  });
  try {
    await program().parseAsync(argv);
  } catch (error) {
    const message = error instanceof ClientError ? error.message : errorMessage(error);
    process.stderr.write(`kts: ${message}\n`);
    process.exitCode = error instanceof UsageError ? 2 : process.exitCode && process.exitCode !== 0 ? process.exitCode : 1;
  }
}

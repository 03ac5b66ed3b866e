// The Linux options of a pod (CRI PodSandboxConfig.linux and dns_config) that kts honours: host
// namespaces, namespaced sysctls and the resolver. They come from containerd (a trusted client), but
// a sysctl is a write into the kernel: only names the kernel keeps per network or IPC namespace are
// accepted, and never one of a namespace the pod shares with the host.
import { invalidArgument } from '../core/errors.js';
import type { PodLinuxOptions } from '../core/sandboxer.js';

/** Sysctls the kernel keeps per IPC namespace (Kubernetes' list of namespaced ones). */
const IPC_SYSCTLS = new Set(['kernel.shmall', 'kernel.shmmax', 'kernel.shmmni', 'kernel.shm_rmid_forced', 'kernel.msgmax', 'kernel.msgmnb', 'kernel.msgmni', 'kernel.sem']);
const SYSCTL_NAME = /^[a-z0-9_]+(\.[a-z0-9_-]+)+$/;
const MAX_SYSCTLS = 64;
const MAX_DNS_ENTRIES = 32;

/** Which of the pod's namespaces a sysctl lives in, or undefined when it is not namespaced. */
export function sysctlNamespace(name: string): 'ipc' | 'network' | undefined {
  if (IPC_SYSCTLS.has(name) || name.startsWith('fs.mqueue.')) return 'ipc';
  if (name.startsWith('net.')) return 'network';
  return undefined;
}

/** Checks the pod's Linux options; throws invalid_argument naming the first problem. */
export function validatePodLinux(options: PodLinuxOptions): PodLinuxOptions {
  const sysctls = Object.entries(options.sysctls ?? {});
  if (sysctls.length > MAX_SYSCTLS) throw invalidArgument(`pod sysctls: ${sysctls.length} given, at most ${MAX_SYSCTLS}`);
  for (const [rawName, value] of sysctls) {
    // Kubernetes accepts slashes as separators too (net/ipv4/ip_forward).
    const name = rawName.replaceAll('/', '.');
    if (!SYSCTL_NAME.test(name) || name.length > 128) throw invalidArgument(`pod sysctl "${rawName}": not a sysctl name`);
    const namespace = sysctlNamespace(name);
    if (!namespace) throw invalidArgument(`pod sysctl "${rawName}" is not namespaced: it would change the host`);
    if (namespace === 'network' && options.hostNetwork) throw invalidArgument(`pod sysctl "${rawName}" with the host's network namespace would change the host`);
    if (namespace === 'ipc' && options.hostIpc) throw invalidArgument(`pod sysctl "${rawName}" with the host's IPC namespace would change the host`);
    if (typeof value !== 'string' || value.length > 256 || /[\n\0]/.test(value)) throw invalidArgument(`pod sysctl "${rawName}": its value must be one line of at most 256 characters`);
  }
  const dns = options.dns;
  if (dns) {
    for (const [field, entries] of Object.entries(dns) as [string, string[]][]) {
      if (entries.length > MAX_DNS_ENTRIES) throw invalidArgument(`pod dns_config.${field}: ${entries.length} given, at most ${MAX_DNS_ENTRIES}`);
      for (const entry of entries) {
        if (!entry || entry.length > 253 || /\s/.test(entry)) throw invalidArgument(`pod dns_config.${field}: "${entry}" must be one word of at most 253 characters`);
      }
    }
  }
  return {
    ...options,
    ...(sysctls.length > 0 ? { sysctls: Object.fromEntries(sysctls.map(([name, value]) => [name.replaceAll('/', '.'), value])) } : {}),
  };
}

/** The resolv.conf of a pod's dns_config (what containerd writes for its own pods), or undefined without one. */
export function resolvConf(dns: PodLinuxOptions['dns']): string | undefined {
  if (!dns || dns.servers.length + dns.searches.length + dns.options.length === 0) return undefined;
  const lines = [
    ...(dns.searches.length > 0 ? [`search ${dns.searches.join(' ')}`] : []),
    ...dns.servers.map((server) => `nameserver ${server}`),
    ...(dns.options.length > 0 ? [`options ${dns.options.join(' ')}`] : []),
  ];
  return `${lines.join('\n')}\n`;
}

/** The kts-sandbox-init arguments for the pod's namespaces and sysctls. */
export function sandboxInitArgs(options: PodLinuxOptions | undefined): string[] {
  if (!options) return [];
  return [
    ...(options.hostNetwork ? ['--host-network'] : []),
    ...(options.hostIpc ? ['--host-ipc'] : []),
    ...(options.hostPid ? ['--host-pid'] : []),
    ...Object.entries(options.sysctls ?? {}).flatMap(([name, value]) => ['--sysctl', `${name}=${value}`]),
  ];
}

// How a VM sandbox's Start splits, from the SandboxStarted event the vmm backend records: QEMU +
// guest boot until the agent answers, the pod's start inside the guest, and the rest (our code:
// API, engine, store commits, QEMU command line, 9p share), as bench/vm-start.mjs defines it.

/** The split of one Start call that took `startMs`, read from the sandbox's history. */
export async function vmStartSplit(client, sandboxId, startMs) {
  const history = await client.admin.History({ ref: sandboxId });
  const started = history.events.find((event) => event.type === 'SandboxStarted');
  if (!started) throw new Error(`sandbox ${sandboxId} has no SandboxStarted event`);
  const backend = JSON.parse(started.payloadJson).backend;
  const bootMs = backend['guest.boot_ms'];
  const podStartMs = backend['guest.pod_start_ms'];
  return {
    startMs, bootMs, podStartMs, ownMs: startMs - bootMs - podStartMs, accelerator: backend['hypervisor.accelerator'], acceleratorReason: backend['hypervisor.accelerator_reason'],
    // The guest's OCI runtime (`crun 1.8.1`); builds before it was recorded ran runc.
    ociRuntime: backend['guest.oci_runtime'] ?? 'runc (not recorded)',
  };
}

/** TOML for the daemon's [hypervisor] section. */
export const hypervisorConfig = ({ guestDir = '/var/lib/kts/guest', accelerator = 'auto' } = {}) => `[hypervisor]\nguest_dir = "${guestDir}"\naccelerator = "${accelerator}"\n`;


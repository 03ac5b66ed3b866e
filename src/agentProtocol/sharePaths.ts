import { join } from 'node:path';

// The VM's 9p share as host and guest both name it: the host writes each container's bundle, rootfs and
// stdio beneath it (backends/vmm/share.ts), the agent finds them there (agent/agentService.ts).

/** The guest sees the share here; every guest path kts hands the agent starts with it. */
export const GUEST_SHARE_DIR = '/run/kts/share';

/** Beside `stdin` in a container's (or exec's) share directory once the host's stdin has ended. */
export const STDIN_END_MARKER = 'stdin.end';

/** A container's directory inside the share, relative to it. */
export const containerShareDir = (containerId: string) => join('c', containerId);
export const execShareDir = (containerId: string, execId: string) => join('c', containerId, 'exec', execId);

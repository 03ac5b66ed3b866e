/**
 * The node's own stream (`node`): facts about host resources that belong to no recorded sandbox,
 * found by recovery's scan of kts's directories and runc root. Pure: no I/O here.
 */
import { setup } from 'xstate';

export type NodeEvent = {
  /** Removed, or (CleanupFailed) found and not removable yet: the daemon keeps serving and tries again at its next sweep. */
  type: 'OrphanRemoved' | 'CleanupFailed';
  /** Sandbox kind whose scan found it, e.g. `runc`. */
  kind: string;
  /** What it was, e.g. `sandbox directory /var/lib/kts/sandboxes/x with its init`. */
  resource: string;
  reason: string;
};

export const NODE_STATES = ['watching'] as const;

export const nodeMachine = setup({
  types: { context: {} as Record<string, never>, events: {} as NodeEvent },
}).createMachine({
  id: 'node',
  initial: 'watching',
  context: {},
  states: {
    // The daemon serves this node; every resource it found without a record is gone, as its events say.
    watching: {
      on: { OrphanRemoved: { target: 'watching' }, CleanupFailed: { target: 'watching' } },
    },
  },
});

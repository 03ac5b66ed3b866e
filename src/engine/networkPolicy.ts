/** Which pods kts runs CNI for: pure decisions from the pod's record and the daemon's settings. */
import type { SandboxContext } from '../../machines/sandboxMachine.js';
import { failedPrecondition, invalidArgument } from '../core/errors.js';
import { NETWORK_ANNOTATION, NETWORK_CHOICES } from '../core/podNetwork.js';
import type { Sandboxer } from '../core/sandboxer.js';

/** A pod's `io.kts.network` annotation must name a choice this daemon can honour; checked before the pod is recorded. */
export function checkNetworkChoice(pod: { kind: string; netnsPath?: string; annotations: Record<string, string> }, sandboxer: Sandboxer, runsCni: boolean): void {
  const choice = pod.annotations[NETWORK_ANNOTATION];
  if (choice === undefined) return;
  if (!(NETWORK_CHOICES as readonly string[]).includes(choice)) throw invalidArgument(`annotation ${NETWORK_ANNOTATION} must be one of ${NETWORK_CHOICES.join(', ')}, not "${choice}"`);
  if (choice !== 'cni') return;
  if (pod.netnsPath) throw invalidArgument(`annotation ${NETWORK_ANNOTATION}=cni conflicts with netns_path ${pod.netnsPath}: that netns is set up already`);
  if (!sandboxer.podNetwork) throw invalidArgument(`${pod.kind} sandboxes have no network namespace to run CNI in`);
  if (!runsCni) throw failedPrecondition(`this daemon does not run CNI (set [network] cni = true), so annotation ${NETWORK_ANNOTATION}=cni cannot be honoured`);
}

/** Whether kts makes this pod's netns and runs CNI in it; a netns given at creation, or the host's (hostNetwork), is never touched. */
export function wantsPodNetwork(pod: SandboxContext, sandboxer: Sandboxer, runsCni: boolean): boolean {
  if (pod.netnsPath !== null || pod.linux?.hostNetwork || !sandboxer.podNetwork) return false;
  return runsCni && pod.annotations[NETWORK_ANNOTATION] !== 'none';
}

// Shared by the guest agent and the host's AgentClient. Imports nothing that looks for the repo's
// proto/ directory at load time: in the guest the bundle sits alone in /kts/agent.
import type { ServiceDefinition } from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { internal } from '../core/errors.js';
import type { ContainerStats } from '../core/sandboxer.js';

export const AGENT_SERVICE = 'kts.agent.v1.Agent';

/** Fields are camelCased; int64/uint64 become numbers (exit times in ms and byte counts fit). */
const LOADER_OPTIONS: protoLoader.Options = { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true };

/** The grpc-js definition of kts.agent.v1.Agent from the given agent.proto. */
export function loadAgentDefinition(protoFile: string): ServiceDefinition {
  const packageDefinition = protoLoader.loadSync(protoFile, LOADER_OPTIONS);
  const definition = packageDefinition[AGENT_SERVICE];
  if (!definition || 'format' in definition || 'type' in definition) throw internal(`${AGENT_SERVICE} is not a service in ${protoFile}`);
  return definition as ServiceDefinition;
}

// Wire messages as the loader hands them over (defaults on: every scalar field is present).

export interface WireStdio {
  stdin: string;
  stdout: string;
  stderr: string;
}

export interface CheckResponse {
  uptimeSeconds: number;
  agentVersion: string;
  podPid: number;
  sandboxId: string;
  podAlive: boolean;
  ociRuntime: string;
  jitless: boolean;
}

export interface StartPodRequest {
  sandboxId: string;
  hostname: string;
}

export interface CreateContainerRequest {
  containerId: string;
  bundle: string;
  stdio: WireStdio | null;
}

export interface ContainerRequest {
  containerId: string;
}

export interface KillProcessRequest {
  pid: number;
  signal: number;
}

export interface KillRequest {
  containerId: string;
  signal: number;
  all: boolean;
}

export interface ExecRequest {
  containerId: string;
  execId: string;
  processJson: string;
  stdio: WireStdio | null;
}

export interface ExecIdRequest {
  containerId: string;
  execId: string;
}

export interface WaitRequest {
  pid: number;
}

export interface StopPodRequest {
  timeoutMs: number;
}

export interface WireNetworkInterface {
  name: string;
  mac: string;
  mtu: number;
  addresses: string[];
}

export interface WireNetworkRoute {
  destination: string;
  /** Empty: on-link. */
  gateway: string;
  device: string;
  family: string;
}

export interface ConfigureNetworkRequest {
  interfaces: WireNetworkInterface[];
  routes: WireNetworkRoute[];
}

export interface PidResponse {
  pid: number;
}

export interface ContainerStatusResponse {
  state: string;
  pid: number;
  exited: boolean;
  exitStatus: number;
  exitedAtMs: number;
}

export interface ExitResponse {
  exitStatus: number;
  exitedAtMs: number;
}

export interface PidsResponse {
  pids: number[];
}

/** Same fields, same names as the domain type. */
export type StatsResponse = ContainerStats;

export type Empty = Record<string, never>;

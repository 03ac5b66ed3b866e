import { existsSync } from 'node:fs';
import path from 'node:path';
import { runCommand } from '../../host/command.js';

/** The OCI runtimes kts drives through the same CLI (runcCli.ts): runc, or crun where it can run. */
export type OciRuntimeName = 'runc' | 'crun';
export const OCI_RUNTIME_CHOICES = ['auto', 'crun', 'runc'] as const;
export type OciRuntimeChoice = (typeof OCI_RUNTIME_CHOICES)[number];

export interface ChosenOciRuntime {
  name: OciRuntimeName;
  binary: string;
  /** Why this one, when it is not what was asked for. */
  fallback?: string;
}

/**
 * The runtime the guest agent runs containers with: crun when the image has it (a C binary starts in
 * milliseconds where Go's runc takes a second under TCG) unless `wanted` is runc; runc otherwise.
 */
export function chooseOciRuntime(wanted: string | undefined, binaries: Record<OciRuntimeName, string>, exists: (file: string) => boolean = existsSync): ChosenOciRuntime {
  const choice = wanted === undefined || wanted === '' ? 'auto' : wanted;
  if (!(OCI_RUNTIME_CHOICES as readonly string[]).includes(choice)) return { name: 'runc', binary: binaries.runc, fallback: `unknown OCI runtime "${choice}" (${OCI_RUNTIME_CHOICES.join(', ')})` };
  if (choice === 'runc') return { name: 'runc', binary: binaries.runc };
  if (exists(binaries.crun)) return { name: 'crun', binary: binaries.crun };
  if (choice === 'crun') return { name: 'runc', binary: binaries.runc, fallback: `crun was asked for, but ${binaries.crun} is not there` };
  return { name: 'runc', binary: binaries.runc };
}

/** The kind of runtime a binary is, by its file name: crun's CLI lacks `events`, so stats differ. */
export function ociRuntimeName(binary: string): OciRuntimeName {
  return path.basename(binary).startsWith('crun') ? 'crun' : 'runc';
}

/** "crun 1.8.1" from `crun --version` ("crun version 1.8.1"); the bare name when it does not say. */
export async function describeOciRuntime(binary: string): Promise<string> {
  const name = ociRuntimeName(binary);
  const result = await runCommand(binary, ['--version']).catch(() => undefined);
  const version = result?.code === 0 ? /version\s+([0-9][\w.+~-]{0,40})/.exec(result.stdout)?.[1] : undefined;
  return version ? `${name} ${version}` : name;
}

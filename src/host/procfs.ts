import { readdir, readFile } from 'node:fs/promises';

/** A pid plus its start time (clock ticks since boot): a pid alone may be reused after the process exits. */
export interface ProcessIdentity {
  pid: number;
  startTime: string;
}

interface ProcStat {
  state: string;
  startTime: string;
}

async function readProcStat(pid: number): Promise<ProcStat | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name may contain spaces and parentheses; the fields after the last ')' do not.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state) of proc(5); start time is field 22.
  return { state: fields[0] ?? '', startTime: fields[19] ?? '' };
}

export async function readProcessIdentity(pid: number): Promise<ProcessIdentity | undefined> {
  const stat = await readProcStat(pid);
  return stat && { pid, startTime: stat.startTime };
}

/** A zombie counts as exited: it only waits for its parent to collect the status. */
export async function isProcessAlive(process: ProcessIdentity): Promise<boolean> {
  const stat = await readProcStat(process.pid);
  return stat !== undefined && stat.startTime === process.startTime && stat.state !== 'Z' && stat.state !== 'X';
}

export function formatIdentity(process: ProcessIdentity): string {
  return `${process.pid} ${process.startTime}\n`;
}

export function parseIdentity(text: string): ProcessIdentity | undefined {
  const [pid, startTime] = text.trim().split(/\s+/);
  const parsed = Number(pid);
  return Number.isSafeInteger(parsed) && parsed > 0 && startTime ? { pid: parsed, startTime } : undefined;
}

/** A pid file as runc and the init write it: a decimal number, maybe followed by a newline. */
export async function readPidFile(path: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
  const pid = Number(text.trim());
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

/** Every live process whose argv `matches`, with its identity; processes that end during the scan are left out. */
export async function findProcesses(matches: (argv: string[]) => boolean): Promise<Array<{ identity: ProcessIdentity; argv: string[] }>> {
  const found: Array<{ identity: ProcessIdentity; argv: string[] }> = [];
  for (const entry of await readdir('/proc')) {
    const pid = Number(entry);
    if (!Number.isSafeInteger(pid) || pid <= 0) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    const argv = cmdline.split('\0').slice(0, -1);
    if (argv.length === 0 || !matches(argv)) continue;
    const identity = await readProcessIdentity(pid);
    if (identity) found.push({ identity, argv });
  }
  return found;
}

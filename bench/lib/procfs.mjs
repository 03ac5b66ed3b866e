// Process memory and process lookup from /proc, for the benches' memory tables.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/**
 * Memory of one process from /proc/<pid>/smaps_rollup, in kB: RSS, PSS (shared pages divided among
 * the processes that map them), and USS (its private pages only). undefined if it is gone.
 */
export function memoryKb(pid) {
  let rollup;
  try {
    rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  } catch {
    return undefined;
  }
  const field = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? 0);
  return { rss: field('Rss'), pss: field('Pss'), uss: field('Private_Clean') + field('Private_Dirty'), pssAnon: field('Pss_Anon'), pssFile: field('Pss_File') };
}

/** The sum of memoryKb over pids (processes gone meanwhile count as 0), and how many were read. */
export function totalMemoryKb(pids) {
  const total = { processes: 0, rss: 0, pss: 0, uss: 0 };
  for (const pid of pids) {
    const memory = memoryKb(pid);
    if (!memory) continue;
    total.processes += 1;
    total.rss += memory.rss;
    total.pss += memory.pss;
    total.uss += memory.uss;
  }
  return total;
}

/** Pids of live processes for which `matches(exe, argv)` holds (zombies have no exe and are skipped). */
function pidsWhere(matches) {
  const pids = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (matches(readlinkSync(`/proc/${entry}/exe`), readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' '))) pids.push(Number(entry));
    } catch {
      // exited while we looked, or a kernel thread
    }
  }
  return pids;
}

/** Pids of live processes running `exe` whose argv contains `argvIncludes`. */
export const pidsOf = (exe, argvIncludes = '') => pidsWhere((path, argv) => path === exe && argv.includes(argvIncludes));

/** Pids of live processes whose whole argv, joined by spaces, is `argv` (e.g. the containers' `sleep 600`). */
export const pidsWithArgv = (argv) => pidsWhere((_, actual) => actual === argv);

const TICK_MS = 10; // USER_HZ is 100 on Linux

/**
 * CPU time (ms, user + system) a process has used so far, its threads included (`self`), and that of
 * the children it has waited for (`children`: cutime + cstime). Zeros if it is gone.
 */
export function processCpuMs(pid) {
  let text;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return { self: 0, children: 0 };
  }
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ').map(Number);
  // fields[0] is field 3 of proc(5); utime, stime, cutime, cstime are fields 14 to 17.
  return { self: (fields[11] + fields[12]) * TICK_MS, children: (fields[13] + fields[14]) * TICK_MS };
}

/**
 * CPU accounting over an interval for named groups of processes (`groups()` → { name: pids }):
 * call it once at the start, and the returned function at the end for the { self, children } ms
 * each group used in between. Processes that appear meanwhile count from zero.
 */
export function cpuMeter(groups) {
  const read = () => Object.fromEntries(Object.entries(groups()).map(([name, pids]) => [name, new Map(pids.map((pid) => [pid, processCpuMs(pid)]))]));
  const before = read();
  const zero = { self: 0, children: 0 };
  return () => Object.fromEntries(Object.entries(read()).map(([name, now]) => {
    const used = { self: 0, children: 0 };
    for (const [pid, ms] of now) {
      const was = before[name]?.get(pid) ?? zero;
      used.self += ms.self - was.self;
      used.children += ms.children - was.children;
    }
    return [name, used];
  }));
}

/** The machine's CPU time so far (ms, summed over cores): busy (not idle or iowait) and total. */
export function machineCpuMs() {
  const [, ...ticks] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).map(Number);
  const total = ticks.slice(0, 8).reduce((sum, t) => sum + t, 0);
  return { busy: (total - ticks[3] - ticks[4]) * TICK_MS, total: total * TICK_MS };
}

/**
 * A process's PSS (kB) by what is mapped, from /proc/<pid>/smaps: its executable, the shared
 * libraries, files (e.g. SQLite's WAL index), the malloc heap, and other anonymous memory (where
 * V8 keeps the JS heap and code, and thread stacks).
 */
export function pssByMapping(pid) {
  const exe = readlinkSync(`/proc/${pid}/exe`);
  const parts = { executable: 0, shared_libraries: 0, other_files: 0, malloc_heap: 0, anonymous: 0 };
  let part = 'anonymous';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (header) {
      const name = header[1];
      part = name === exe ? 'executable' : name === '[heap]' ? 'malloc_heap' : /\.so(\.|$)/.test(name) ? 'shared_libraries' : name.startsWith('/') ? 'other_files' : 'anonymous';
      continue;
    }
    const pss = /^Pss:\s+(\d+) kB/.exec(line);
    if (pss) parts[part] += Number(pss[1]);
  }
  return parts;
}

/**
 * Waits until the machine's CPU is less than `busyShare` busy over a second (or `maxMs` passed), so
 * that the kernel's asynchronous cleanup after one series (cgroups, mounts, namespaces of removed
 * containers) is not charged to the next. Resolves with the ms it waited.
 */
export async function waitForQuietMachine({ busyShare = 0.15, maxMs = 30_000 } = {}) {
  const began = Date.now();
  for (;;) {
    const before = machineCpuMs();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const after = machineCpuMs();
    if ((after.busy - before.busy) / (after.total - before.total) < busyShare || Date.now() - began > maxMs) return Date.now() - began;
  }
}

// What a daemon holds on the host, read from /proc, /sys/fs/cgroup and its root, for the soak bench:
// each counter is scoped to one daemon (its pid, its root, the sandbox ids it was given), so other
// daemons and tests on a shared machine do not show up in it.
import { lstatSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { get } from 'node:http';
import path from 'node:path';

const listOr = (dir, fallback = []) => {
  try {
    return readdirSync(dir);
  } catch {
    return fallback;
  }
};

/** Open file descriptors and threads of a process (from /proc/<pid>/fd and /proc/<pid>/status). */
export function fdsAndThreads(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return { fds: listOr(`/proc/${pid}/fd`).length, threads: Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? 0) };
}

/** Every live process's parent, from /proc/<pid>/stat. */
function parentsByPid() {
  const parents = new Map();
  for (const entry of listOr('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // exited while we looked
    }
  }
  return parents;
}

/**
 * The processes below `pid` (children, grandchildren…) plus any other process whose argv mentions
 * `root` (a sandbox init that outlived its parent is reparented to init but still names its state
 * directory), with the distinct network namespaces they hold.
 */
export function processesOf(pid, root) {
  const parents = parentsByPid();
  const found = new Set();
  for (const candidate of parents.keys()) {
    if (candidate === pid) continue;
    let up = parents.get(candidate);
    for (let hops = 0; up !== undefined && up > 1 && hops < 64; hops++) {
      if (up === pid) break;
      up = parents.get(up);
    }
    let mentionsRoot = false;
    try {
      mentionsRoot = readFileSync(`/proc/${candidate}/cmdline`, 'utf8').includes(root);
    } catch {
      continue;
    }
    if (up === pid || mentionsRoot) found.add(candidate);
  }
  const netns = new Set();
  const byName = {};
  for (const child of found) {
    try {
      netns.add(readlinkSync(`/proc/${child}/ns/net`));
      const name = path.basename(readlinkSync(`/proc/${child}/exe`));
      byName[name] = (byName[name] ?? 0) + 1;
    } catch {
      // a zombie or gone
    }
  }
  return { processes: found.size, byName, netns: netns.size };
}

/** Mounts in `pid`'s mount namespace whose mount point is under `root`, and nsfs (netns) mounts among them. */
export function mountsUnder(pid, root) {
  const points = readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n').filter(Boolean).map((line) => {
    const fields = line.split(' ');
    const separator = fields.indexOf('-');
    return { mountPoint: fields[4], fsType: fields[separator + 1] };
  });
  const under = points.filter((p) => p.mountPoint === root || p.mountPoint.startsWith(`${root}/`));
  return { mounts: under.length, nsfs: under.filter((p) => p.fsType === 'nsfs').length, all: points.length };
}

/** cgroup directories, in any hierarchy under /sys/fs/cgroup, named for one of `sandboxIds`, at any depth below `parent`. */
export function cgroupsOf(sandboxIds, parent = 'kts') {
  let count = 0;
  for (const hierarchy of listOr('/sys/fs/cgroup')) {
    const base = path.join('/sys/fs/cgroup', hierarchy, parent);
    for (const entry of listOr(base)) if (sandboxIds.has(entry)) count += 1 + countDirs(path.join(base, entry));
  }
  return count;
}

function countDirs(dir) {
  let count = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) if (entry.isDirectory()) count += 1 + countDirs(path.join(dir, entry.name));
  return count;
}

/** Files and directories under `dir` (not following links, not crossing into other mounts), and their bytes. */
export function treeSize(dir) {
  const device = statSync(dir).dev;
  let entries = 0;
  let bytes = 0;
  const walk = (at) => {
    for (const name of listOr(at)) {
      const full = path.join(at, name);
      let stat;
      try {
        stat = lstatSync(full);
      } catch {
        continue;
      }
      entries += 1;
      if (stat.isDirectory() && stat.dev === device) walk(full);
      else if (stat.isFile()) bytes += stat.size;
    }
  };
  walk(dir);
  return { entries, bytes };
}

/** Entries of a directory (e.g. runc's state root), 0 if it does not exist. */
export const entriesIn = (dir) => listOr(dir).length;

/** Size of a file in bytes, 0 if it does not exist. */
export function fileBytes(file) {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** GET http://<address>/metrics, parsed into { name{labels}: value } (Prometheus text format). */
export function scrapeMetrics(address) {
  return new Promise((resolve, reject) => {
    get(`http://${address}/metrics`, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => (body += chunk));
      response.on('end', () => {
        const values = {};
        for (const line of body.split('\n')) {
          const match = /^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)/.exec(line);
          if (match) values[match[1]] = Number(match[2]);
        }
        resolve(values);
      });
    }).on('error', reject);
  });
}

import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { chmod, chown, lstat, mkdir, open } from 'node:fs/promises';
import path from 'node:path';
import { failedPrecondition, invalidArgument } from '../core/errors.js';

/** What ensurePrivateDir found and did, for the start log. */
export interface PrivateDirOutcome {
  dir: string;
  created: boolean;
  /** The mode it had when it was looser than 0700 and was tightened. */
  tightenedFrom?: number;
  /** The mode it keeps, looser than 0700, when tightening was not asked for. */
  leftLoose?: number;
}

/**
 * Makes `dir` a directory only its owner (the daemon's uid, root) can enter: created 0700 if
 * missing; refused if it is a symbolic link, not a directory, or owned by someone else; tightened
 * to 0700 if looser. The checks and the chmod go through one O_NOFOLLOW descriptor, so the kernel,
 * not a path lookup done twice, decides which directory they apply to.
 */
export async function ensurePrivateDir(dir: string, what: string, options: { tighten: boolean } = { tighten: true }): Promise<PrivateDirOutcome> {
  const made = await mkdir(dir, { recursive: true, mode: 0o700 }).catch((error: NodeJS.ErrnoException) => {
    // A dangling link or a file where the directory should be: the open below says which.
    if (error.code === 'EEXIST') return undefined;
    throw error;
  });
  const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW).catch(async (error: NodeJS.ErrnoException) => {
    // The kernel refused (ELOOP or ENOTDIR for a link, ENOTDIR for a file); lstat only words the message.
    if (error.code !== 'ELOOP' && error.code !== 'ENOTDIR') throw error;
    const link = (await lstat(dir).catch(() => undefined))?.isSymbolicLink();
    throw failedPrecondition(link ? `${what} ${dir} is a symbolic link; refusing to use it (point the config at the real directory)` : `${what} ${dir} is not a directory`);
  });
  try {
    const info = await handle.stat();
    const uid = process.getuid?.() ?? 0;
    if (info.uid !== uid) throw failedPrecondition(`${what} ${dir} is owned by uid ${info.uid}, not by the daemon's uid ${uid}; refusing to use it (chown it or choose another)`);
    const mode = info.mode & 0o7777;
    if (mode === 0o700) return { dir, created: made !== undefined };
    if (made === undefined && !options.tighten) return { dir, created: false, leftLoose: mode };
    await handle.chmod(0o700);
    return { dir, created: made !== undefined, ...(made === undefined && { tightenedFrom: mode }) };
  } finally {
    await handle.close();
  }
}

/**
 * Restricts the daemon's listening socket: 0600, or 0660 owned by `group` when one is configured,
 * whose members then also need to pass through its directory: one of ours becomes 0710 root:group
 * (enter, not list or create). The directory was made private first (ensurePrivateDir), so nobody
 * could swap the path between bind and here.
 */
export async function restrictSocket(socketPath: string, group: string | null, options: { socketDirIsOurs: boolean }): Promise<void> {
  if (group === null) return chmod(socketPath, 0o600);
  const uid = process.getuid?.() ?? 0;
  const gid = await groupId(group);
  await chown(socketPath, uid, gid);
  await chmod(socketPath, 0o660);
  if (!options.socketDirIsOurs) return;
  const dir = await open(path.dirname(socketPath), constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    await dir.chown(uid, gid);
    await dir.chmod(0o710);
  } finally {
    await dir.close();
  }
}

/** A numeric gid as is; a name through NSS (`getent group`), so LDAP and other sources work too. */
async function groupId(group: string): Promise<number> {
  if (/^\d+$/.test(group)) return Number(group);
  const line = await new Promise<string>((resolve, reject) => {
    execFile('getent', ['group', group], { encoding: 'utf8', timeout: 5000 }, (error, stdout) => (error ? reject(error) : resolve(stdout)));
  }).catch(() => undefined);
  const gid = Number(line?.split(':')[2]);
  if (!line || !Number.isInteger(gid)) throw invalidArgument(`config: socket_group "${group}" is not a group on this host`);
  return gid;
}

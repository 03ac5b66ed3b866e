import { constants, existsSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { failedPrecondition, invalidArgument } from '../core/errors.js';
import { runCommand } from './command.js';

/** Linux's O_PATH (Node does not export it): an fd that names a directory without opening it for I/O. */
const O_PATH = 0o10000000;
const HELPER_TIMEOUT_MS = 30_000;

/** `<repo>/dist/native/kts-beneath`, found from this module's location in src/ or dist/src/. */
export function beneathBinary(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return join(dir, 'dist', 'native', 'kts-beneath');
}

/**
 * File and mount operations confined by the kernel beneath one root directory that a hostile party
 * may write (a VM's 9p share): kts-beneath resolves every path with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS) and mounts through fds, so a planted symlink or a rename fails the batch.
 * Operations are queued and run in order by one helper process; the first failure stops the rest.
 */
export class BeneathBatch {
  private readonly fields: Array<string | Buffer> = [];

  constructor(private readonly root: string, private readonly binary = beneathBinary()) {}

  /** REL and its missing parents, each a real directory. */
  mkdir(rel: string): this {
    return this.push('mkdir', rel);
  }

  /** An empty regular file at REL (an existing one is truncated). */
  file(rel: string): this {
    return this.push('file', rel);
  }

  write(rel: string, content: string | Buffer): this {
    const bytes = typeof content === 'string' ? Buffer.from(content) : content;
    this.push('write', rel, String(bytes.length));
    this.fields.push(bytes);
    return this;
  }

  /** Binds the trusted host path `source` onto the existing REL, nosuid and nodev, read-only from the start when asked. */
  bind(source: string, rel: string, readonly = false): this {
    return this.push('bind', source, rel, readonly ? 'ro' : 'rw');
  }

  /** Binds directory REL onto itself: it cannot be renamed while mounted, and `detach` takes all mounted under it. */
  pin(rel: string): this {
    return this.push('pin', rel);
  }

  /** Lazily unmounts the mount whose root is REL, with all beneath it; nothing mounted there is fine. */
  detach(rel: string): this {
    return this.push('detach', rel);
  }

  /** Removes REL and its content without following symlinks or entering mounts; a missing REL is fine. */
  rmtree(rel: string): this {
    return this.push('rmtree', rel);
  }

  /** Frees the disk blocks of the regular file REL below `length` bytes; its size and later bytes stay. */
  punch(rel: string, length: number): this {
    return this.push('punch', rel, String(length));
  }

  async run(): Promise<void> {
    if (this.fields.length === 0) return;
    const input = Buffer.concat(this.fields.map((field) => (typeof field === 'string' ? Buffer.from(`${field}\0`) : field)));
    this.fields.length = 0;
    const result = await runCommand(this.binary, [this.root], HELPER_TIMEOUT_MS, { input });
    if (result.code !== 0) throw failedPrecondition(`refused beneath ${this.root}: ${result.stderr.trim() || `kts-beneath exited ${result.code}`}`);
  }

  private push(op: string, ...args: string[]): this {
    for (const field of [op, ...args]) {
      if (field.includes('\0')) throw invalidArgument(`a path given to kts-beneath contains NUL: ${JSON.stringify(field)}`);
      this.fields.push(field);
    }
    return this;
  }
}

/** A relative path as components; refuses what could leave the root before the kernel would. */
function components(rel: string): string[] {
  const parts = rel.split('/').filter((part) => part !== '' && part !== '.');
  if (rel.startsWith('/') || parts.length === 0 || parts.includes('..')) throw invalidArgument(`"${rel}" is not a path beneath a root`);
  return parts;
}

/**
 * Opens the regular file REL beneath `root` from this process, one component at a time: each
 * directory by O_PATH|O_DIRECTORY|O_NOFOLLOW relative to the previous one's fd (/proc/self/fd/N), the
 * file with O_NOFOLLOW|O_NONBLOCK. A symlink anywhere fails it (ELOOP/ENOTDIR), a FIFO or device is
 * refused after fstat without ever blocking. Node has no openat: this is its kernel-checked stand-in.
 */
export async function openBeneath(root: string, rel: string, flags: number, mode = 0o644): Promise<FileHandle> {
  const parts = components(rel);
  let dir = await open(root, O_PATH | constants.O_DIRECTORY);
  try {
    for (const part of parts.slice(0, -1)) {
      const next = await open(`/proc/self/fd/${dir.fd}/${part}`, O_PATH | constants.O_DIRECTORY | constants.O_NOFOLLOW);
      await dir.close();
      dir = next;
    }
    const file = await open(`/proc/self/fd/${dir.fd}/${parts.at(-1)!}`, flags | constants.O_NOFOLLOW | constants.O_NONBLOCK, mode);
    const stat = await file.stat().catch(async (error: unknown) => {
      await file.close();
      throw error;
    });
    if (!stat.isFile()) {
      await file.close();
      throw failedPrecondition(`${join(root, rel)} is not a regular file`);
    }
    return file;
  } finally {
    await dir.close();
  }
}

/** Whether REL exists beneath `root` as a regular file, checked the same confined way. */
export async function regularFileBeneath(root: string, rel: string): Promise<boolean> {
  return openBeneath(root, rel, constants.O_RDONLY).then(async (file) => {
    await file.close();
    return true;
  }, () => false);
}

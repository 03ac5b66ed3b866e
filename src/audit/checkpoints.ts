import type { KeyObject } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { errorMessage, failedPrecondition } from '../core/errors.js';
import type { AuditCheckpoint } from '../core/store.js';
import { stableStringify } from '../store/canonicalJson.js';
import { keyIdOf, signatureValid, type AuditKey } from './auditKey.js';

/** The text a checkpoint's signature covers: every field but the signature, as canonical JSON, tagged so no other signed record can pass for one. */
export function checkpointSigningText(checkpoint: Omit<AuditCheckpoint, 'signature'>): string {
  const { sequence, hash, time, keyId } = checkpoint;
  return stableStringify({ kind: 'kts.checkpoint.v1', sequence, hash, time, keyId });
}

export function signCheckpoint(head: { sequence: number; hash: string }, key: AuditKey, now = new Date()): AuditCheckpoint {
  const unsigned = { sequence: head.sequence, hash: head.hash, time: now.toISOString(), keyId: key.keyId };
  return { ...unsigned, signature: key.sign(checkpointSigningText(unsigned)) };
}

/** Why `checkpoint` is not one `publicKey` signed, or undefined when it is. */
export function signatureProblem(checkpoint: AuditCheckpoint, publicKey: KeyObject): string | undefined {
  const trusted = keyIdOf(publicKey);
  if (checkpoint.keyId !== trusted) return `it is signed by key ${checkpoint.keyId.slice(0, 16)}…, not the trusted key ${trusted.slice(0, 16)}…`;
  if (!signatureValid(publicKey, checkpointSigningText(checkpoint), checkpoint.signature)) return 'its signature does not verify: it was altered or forged';
  return undefined;
}

/** A checkpoint read from outside (head.json, an export line), checked for shape; `where` names it in the error. */
export function parseCheckpoint(value: unknown, where: string): AuditCheckpoint {
  const fields = (value ?? {}) as Record<string, unknown>;
  const { sequence, hash, time, keyId, signature } = fields;
  const valid = Number.isSafeInteger(sequence) && (sequence as number) > 0 && typeof hash === 'string' && /^[0-9a-f]{64}$/.test(hash)
    && typeof time === 'string' && typeof keyId === 'string' && typeof signature === 'string';
  if (!valid) throw failedPrecondition(`${where} is not a kts checkpoint ({sequence, hash, time, keyId, signature})`);
  return { sequence: sequence as number, hash: hash as string, time: time as string, keyId: keyId as string, signature: signature as string };
}

/** Replaces `file` with `checkpoint` (temp file, fsync, rename): a reader sees the old head or the new one, never half of one. */
export function writeHeadFile(file: string, checkpoint: AuditCheckpoint): void {
  const temp = `${file}.tmp`;
  try {
    const fd = openSync(temp, 'w', 0o600);
    try {
      writeSync(fd, `${JSON.stringify(checkpoint, null, 2)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, file);
  } catch (error) {
    rmSync(temp, { force: true });
    throw error;
  }
}

/** The checkpoint in a head file; undefined when there is none and `required` is false. */
export function readHeadFile(file: string, required: boolean): AuditCheckpoint | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if (!required && (error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw failedPrecondition(`head file ${file} cannot be read: ${errorMessage(error)}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw failedPrecondition(`head file ${file} is not JSON`);
  }
  return parseCheckpoint(parsed, `head file ${file}`);
}

import { createHash, createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { errorMessage, failedPrecondition } from '../core/errors.js';

/**
 * The daemon's audit key: Ed25519, kept outside the database so that whoever can write the database
 * cannot also sign a head for what they wrote. Its public half sits beside it as `<key file>.pub` (PEM),
 * to be copied wherever verification happens.
 */
export interface AuditKey {
  /** sha256 (hex) of the public key (SPKI DER): names the key in every signed record. */
  keyId: string;
  publicKey: KeyObject;
  /** Ed25519 signature (base64) of `text`. */
  sign(text: string): string;
  /**
   * HMAC-SHA256 (base64) of `text` under a key derived from the private key: a seal only this daemon checks
   * (its snapshots), ~30 times cheaper than a signature, for what needs no verification by others.
   */
  mac(text: string): string;
}

export const publicKeyFileOf = (keyFile: string) => `${keyFile}.pub`;

export function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex');
}

/** Whether `signature` (base64) is `publicKey`'s Ed25519 signature of `text`. */
export function signatureValid(publicKey: KeyObject, text: string, signature: string): boolean {
  try {
    return verify(null, Buffer.from(text, 'utf8'), publicKey, Buffer.from(signature, 'base64'));
  } catch {
    return false;
  }
}

/** Loads the key at `keyFile`, creating it (0600, in a 0700 directory) with its `.pub` on first start. */
export function openAuditKey(keyFile: string): AuditKey {
  mkdirSync(path.dirname(keyFile), { recursive: true, mode: 0o700 });
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(readFileSync(keyFile));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw failedPrecondition(`audit key ${keyFile} cannot be read: ${errorMessage(error)}`);
    privateKey = generateKeyPairSync('ed25519').privateKey;
    // 'wx': two daemons starting at once never overwrite each other's key.
    writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') throw failedPrecondition(`audit key ${keyFile} is a ${privateKey.asymmetricKeyType} key, not Ed25519`);
  const publicKey = createPublicKey(privateKey);
  // Rewritten each start: a lost or stale .pub comes back from the private key.
  writeFileSync(publicKeyFileOf(keyFile), publicKey.export({ type: 'spki', format: 'pem' }), { mode: 0o644 });
  chmodSync(publicKeyFileOf(keyFile), 0o644);
  const macKey = createHash('sha256').update(privateKey.export({ type: 'pkcs8', format: 'der' })).update('kts.snapshot-seal.v1').digest();
  return {
    keyId: keyIdOf(publicKey), publicKey,
    sign: (text) => sign(null, Buffer.from(text, 'utf8'), privateKey).toString('base64'),
    mac: (text) => createHmac('sha256', macKey).update(text, 'utf8').digest('base64'),
  };
}

/** An Ed25519 public key from a PEM file (a `.pub` the daemon wrote). */
export function readPublicKey(file: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(readFileSync(file));
  } catch (error) {
    throw failedPrecondition(`audit public key ${file} cannot be read: ${errorMessage(error)}`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw failedPrecondition(`audit public key ${file} is a ${key.asymmetricKeyType} key, not Ed25519`);
  return key;
}

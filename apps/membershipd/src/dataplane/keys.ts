import { randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { fromCurveSeed, fromSeed, type KeyPair } from 'nkeys.js';
import { deriveSeed, nkeySeedFromRaw, writeFileAtomic, type Identity } from '@sealbus/crypto';
import { fastCurve, fastIssuer } from './fastkeys.js';

/**
 * The auth callout's keys, shared by every node of a deployment: the account
 * key that signs user JWTs and callout answers (the servers trust its public
 * half as `issuer`), and the curve key the servers encrypt callout requests
 * to. A node may answer another node's callout request, so all nodes need
 * the same pair. Secret: 0600, never logged.
 */
export interface CalloutKeys {
  issuer: KeyPair;
  xkey: KeyPair;
}

interface CalloutKeyFile {
  version: 1;
  issuer_seed: string;
  xkey_seed: string;
}

function parse(text: string, path: string): CalloutKeys {
  let f: CalloutKeyFile;
  try {
    f = JSON.parse(text) as CalloutKeyFile;
  } catch {
    throw new Error(`callout key file ${path}: not valid JSON`);
  }
  if (f?.version !== 1 || typeof f.issuer_seed !== 'string' || typeof f.xkey_seed !== 'string') {
    throw new Error(
      `callout key file ${path}: expected {"version":1,"issuer_seed":"SA…","xkey_seed":"SX…"}`
    );
  }
  try {
    const issuer = fromSeed(new TextEncoder().encode(f.issuer_seed));
    const xkey = fromCurveSeed(new TextEncoder().encode(f.xkey_seed));
    if (!issuer.getPublicKey().startsWith('A') || !xkey.getPublicKey().startsWith('X'))
      throw new Error('prefix');
    // Same keys, faster operations (node:crypto signatures, kept shared keys).
    return { issuer: fastIssuer(issuer), xkey: fastCurve(xkey) };
  } catch {
    throw new Error(
      `callout key file ${path}: issuer_seed must be an account seed (SA…) and xkey_seed a curve seed (SX…)`
    );
  }
}

/** Loads the callout keys, creating them (0600) only when the file does not exist. */
export async function loadOrCreateCalloutKeys(
  path: string
): Promise<{ keys: CalloutKeys; created: boolean }> {
  try {
    const st = await stat(path);
    if ((st.mode & 0o077) !== 0) {
      throw new Error(
        `callout key file ${path} is accessible by group or others; run: chmod 600 ${path}`
      );
    }
    return { keys: parse(await readFile(path, 'utf8'), path), created: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const file: CalloutKeyFile = {
    version: 1,
    issuer_seed: nkeySeedFromRaw('account', new Uint8Array(randomBytes(32))),
    xkey_seed: nkeySeedFromRaw('curve', new Uint8Array(randomBytes(32))),
  };
  try {
    await writeFileAtomic(path, JSON.stringify(file) + '\n', { mode: 0o600, createOnly: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return loadOrCreateCalloutKeys(path);
    throw err;
  }
  return { keys: parse(JSON.stringify(file), path), created: true };
}

/** The NATS users a node's daemon connects as, all derived from its internal identity. */
export interface NodeUsers {
  /** Account SEALBUS: the control state (buckets, audit, nonces, changes). */
  internal: KeyPair;
  /** Account APP: room streams and their consumers, appends, events to users. */
  app: KeyPair;
  /** Account AUTH: answers `$SYS.REQ.USER.AUTH`. */
  service: KeyPair;
  /** Account SYS: finds (CONNZ) and kicks connections. */
  system: KeyPair;
}

/**
 * HKDF labels (`sealbus/<label>`) of the node users. Each differs from the
 * client label `nats-user/v1`, so no node user is ever the NATS key a
 * client would derive from the same identity, and the internal identity's
 * sign seed itself authenticates nowhere.
 */
export const NODE_USER_LABELS = Object.freeze({
  internal: 'node-internal',
  app: 'node-app',
  service: 'callout-service',
  system: 'system',
} as const);

const userKeyPair = (raw: Uint8Array) =>
  fromSeed(new TextEncoder().encode(nkeySeedFromRaw('user', raw)));

export function nodeUsers(internal: Identity): NodeUsers {
  return {
    internal: userKeyPair(deriveSeed(internal.signSeed, NODE_USER_LABELS.internal)),
    app: userKeyPair(deriveSeed(internal.signSeed, NODE_USER_LABELS.app)),
    service: userKeyPair(deriveSeed(internal.signSeed, NODE_USER_LABELS.service)),
    system: userKeyPair(deriveSeed(internal.signSeed, NODE_USER_LABELS.system)),
  };
}

/**
 * The `SU…` seed of the node's store user (account SEALBUS), for tools that
 * work on a node's store over its privileged connection (`membershipd
 * user …`, backups, tests). A secret.
 */
export function internalNatsSeed(internal: Identity): Uint8Array {
  return new TextEncoder().encode(
    nkeySeedFromRaw('user', deriveSeed(internal.signSeed, NODE_USER_LABELS.internal))
  );
}

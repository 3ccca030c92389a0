import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { generateSigningKeyPair, privateKeyFromPem, privateKeyToPem, signingKeyPairFrom, signingKeySchema } from '@vmkit/protocol';
import type { SigningKey, SigningKeyPair } from '@vmkit/protocol';
import type { KeyObject } from 'node:crypto';

/** A control-plane signing key as agents pin it. */
export type PublishedKey = SigningKey;

/**
 * `active` signs commands; `next` is published (agents pin it) but does not sign yet;
 * `retired` no longer signs nor is published, but its private half is kept so that an
 * agent that was offline during a rotation can still be told the new key by a message
 * it can verify.
 */
export type KeyState = 'active' | 'next' | 'retired';

const ringFileSchema = z.strictObject({
  version: z.literal(1),
  keys: z.array(
    signingKeySchema.extend({
      state: z.enum(['active', 'next', 'retired']),
      created_at: z.number().int(),
      retired_at: z.number().int().nullable(),
    }),
  ),
});
export type RingEntry = z.infer<typeof ringFileSchema>['keys'][number];

export interface SigningKeyRing {
  /** The key that signs commands now. */
  active(): SigningKeyPair;
  /** Keys agents should pin: active and next, newest last. */
  published(): PublishedKey[];
  retiredIds(): string[];
  /** Any key this control plane holds, retired ones included. */
  get(keyId: string): SigningKeyPair | undefined;
}

/**
 * A ring that can rotate: in files for one process (`FileKeyRing`), in the database for
 * several (`DbKeyRing`, ./signing-keys-db.ts, whose changes are awaited).
 */
export interface RotatableKeyRing extends SigningKeyRing {
  list(): readonly RingEntry[];
  /** Re-reads a ring other processes may change (the database's); files need none. */
  refresh?(): Promise<void>;
  addNext(): SigningKeyPair | Promise<SigningKeyPair>;
  promoteNext(now?: number): { active: string; retired: string } | Promise<{ active: string; retired: string }>;
}

/**
 * What every ring answers from memory (signing must not wait on storage): entries
 * with their states, and the key pairs they name. Subclasses load and change them.
 */
export abstract class KeyRingEntries implements SigningKeyRing {
  protected entries: RingEntry[] = [];
  protected readonly pairs = new Map<string, SigningKeyPair>();

  active(): SigningKeyPair {
    const entry = this.entries.find((e) => e.state === 'active');
    const pair = entry && this.pairs.get(entry.key_id);
    if (!pair) throw new Error('no active signing key');
    return pair;
  }

  published(): PublishedKey[] {
    return this.entries
      .filter((e) => e.state !== 'retired')
      .sort((a, b) => (a.state === b.state ? a.created_at - b.created_at : a.state === 'active' ? -1 : 1))
      .map((e) => ({ key_id: e.key_id, public_key: e.public_key }));
  }

  retiredIds(): string[] {
    return this.entries.filter((e) => e.state === 'retired').map((e) => e.key_id);
  }

  get(keyId: string): SigningKeyPair | undefined {
    return this.pairs.get(keyId);
  }

  list(): readonly RingEntry[] {
    return this.entries;
  }
}

/**
 * Keys live in `<dataDir>/signing-keys/`: one PKCS#8 PEM per key (0600, in a 0700
 * directory) and `keys.json` listing each key's state. Writes go through a temp file
 * and rename, so a crash never leaves a half-written ring.
 */
export class FileKeyRing extends KeyRingEntries implements RotatableKeyRing {
  readonly dir: string;

  private constructor(dir: string) {
    super();
    this.dir = dir;
  }

  /**
   * Opens (creating) the ring. With no key yet, `adoptPemFile` (the control plane's
   * first signing key, `<dataDir>/signing-key.pem`) becomes the active key, so agents
   * enrolled before the ring existed keep verifying.
   */
  static open(dataDir: string, adoptPemFile?: string): FileKeyRing {
    const ring = new FileKeyRing(join(dataDir, 'signing-keys'));
    mkdirSync(ring.dir, { recursive: true, mode: 0o700 });
    chmodSync(ring.dir, 0o700);
    const listPath = join(ring.dir, 'keys.json');
    if (existsSync(listPath)) {
      ring.entries = ringFileSchema.parse(JSON.parse(readFileSync(listPath, 'utf8'))).keys;
      for (const e of ring.entries) {
        const pair = signingKeyPairFrom(privateKeyFromPem(readFileSync(ring.#pemPath(e.key_id), 'utf8')));
        if (pair.keyId !== e.key_id) throw new Error(`signing key file for ${e.key_id} holds another key`);
        ring.pairs.set(e.key_id, pair);
      }
    }
    if (!ring.entries.some((e) => e.state === 'active')) {
      if (ring.entries.length === 0 && adoptPemFile !== undefined && existsSync(adoptPemFile)) {
        ring.#adopt(privateKeyFromPem(readFileSync(adoptPemFile, 'utf8')));
      } else {
        ring.#add('active');
      }
    }
    return ring;
  }

  #pemPath(keyId: string): string {
    return join(this.dir, `${keyId.replace('ed25519:', '')}.pem`);
  }

  #save(): void {
    const tmp = join(this.dir, `keys.json.${process.pid}.tmp`);
    writeFileSync(tmp, `${JSON.stringify({ version: 1, keys: this.entries }, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, join(this.dir, 'keys.json'));
  }

  #adopt(privateKey: KeyObject): void {
    const pair = signingKeyPairFrom(privateKey);
    writeFileSync(this.#pemPath(pair.keyId), privateKeyToPem(pair.privateKey), { mode: 0o600, flag: 'wx' });
    this.pairs.set(pair.keyId, pair);
    this.entries.push({ key_id: pair.keyId, public_key: pair.publicKey, state: 'active', created_at: Date.now(), retired_at: null });
    this.#save();
  }

  #add(state: KeyState): SigningKeyPair {
    const pair = generateSigningKeyPair();
    writeFileSync(this.#pemPath(pair.keyId), privateKeyToPem(pair.privateKey), { mode: 0o600, flag: 'wx' });
    this.pairs.set(pair.keyId, pair);
    this.entries.push({ key_id: pair.keyId, public_key: pair.publicKey, state, created_at: Date.now(), retired_at: null });
    this.#save();
    return pair;
  }

  /** Adds a key in state `next`: published to agents, not signing yet. */
  addNext(): SigningKeyPair {
    if (this.entries.some((e) => e.state === 'next')) throw new Error('a next key already exists; promote it first');
    return this.#add('next');
  }

  /** The next key becomes active; the previously active one is retired. */
  promoteNext(now = Date.now()): { active: string; retired: string } {
    const next = this.entries.find((e) => e.state === 'next');
    const active = this.entries.find((e) => e.state === 'active');
    if (!next || !active) throw new Error('no next key to promote; add one first');
    next.state = 'active';
    active.state = 'retired';
    active.retired_at = now;
    this.#save();
    return { active: next.key_id, retired: active.key_id };
  }
}

import { asc, eq } from 'drizzle-orm';
import { generateSigningKeyPair, privateKeyFromPem, privateKeyToPem, signingKeyPairFrom } from '@vmkit/protocol';
import type { SigningKeyPair } from '@vmkit/protocol';
import type { SecretBox } from '../auth/secret-box.ts';
import type { Db } from '../db/index.ts';
import { exec, lockedTransaction, rows } from '../db/tx.ts';
import type { TxBody } from '../db/tx.ts';
import { KeyRingEntries } from './signing-keys.ts';
import type { KeyState, RingEntry, RotatableKeyRing } from './signing-keys.ts';

/** "vmkitkey" in ASCII as a bigint: the transaction-scoped lock every change of the ring takes on PostgreSQL. */
const RING_LOCK = 0x766d6b69746b6579n;

interface LoadedRow {
  keyId: string;
  publicKey: string;
  state: string;
  sealedPrivateKey: string;
  createdAt: number;
  retiredAt: number | null;
}

/** The SecretBox context a key's private half is sealed under: a sealed key moved to another row does not open. */
export function signingKeyContext(keyId: string): string {
  return `signing-key/${keyId}`;
}

/**
 * The signing key ring of several control-plane processes on one database: rows of
 * `signing_keys`, private halves sealed with the SecretBox (so every process needs the
 * same secret-box key; one that holds another key fails at start, naming both key ids).
 * Reads are served from memory (signing must not wait on the database); `refresh()`
 * re-reads the rows, on a timer (`refreshMs`) and after this process's own changes, so a
 * rotation made through any process is signed with everywhere within one interval.
 * Changes (`addNext`, `promoteNext`) are one transaction each under a lock, so two
 * processes rotating at once cannot make two next keys or two active ones.
 */
export class DbKeyRing extends KeyRingEntries implements RotatableKeyRing {
  readonly #db: Db;
  readonly #box: SecretBox;
  #timer: NodeJS.Timeout | undefined;

  private constructor(db: Db, box: SecretBox) {
    super();
    this.#db = db;
    this.#box = box;
  }

  /**
   * Opens the ring, creating its first active key when the database has none (one
   * process does, the others find it), and re-reads it every `refreshMs` (0: never).
   * `adopt` is this process's file ring's active key: a deployment moving to several
   * processes keeps the key its agents already pin.
   */
  static async open(
    db: Db,
    box: SecretBox,
    opts: { refreshMs?: number; adopt?: SigningKeyPair; onRefreshError?: (err: unknown) => void } = {},
  ): Promise<DbKeyRing> {
    const ring = new DbKeyRing(db, box);
    const first = opts.adopt ?? generateSigningKeyPair();
    const sealed = box.seal(privateKeyToPem(first.privateKey), signingKeyContext(first.keyId));
    await ring.#change(function* (tx, t) {
      const active = yield* rows(tx.select({ keyId: t.signingKeys.keyId }).from(t.signingKeys).where(eq(t.signingKeys.state, 'active')));
      if (active.length > 0) return;
      yield* exec(
        tx
          .insert(t.signingKeys)
          .values({ keyId: first.keyId, publicKey: first.publicKey, state: 'active', sealedPrivateKey: sealed, createdAt: Date.now(), retiredAt: null }),
      );
    });
    await ring.refresh();
    const every = opts.refreshMs ?? 5_000;
    if (every > 0) {
      ring.#timer = setInterval(() => {
        // A failed read keeps the ring it has (and says why); the next tick tries again.
        ring.refresh().catch((err: unknown) => opts.onRefreshError?.(err));
      }, every);
      ring.#timer.unref();
    }
    return ring;
  }

  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Re-reads the rows; a key not seen before is unsealed once. */
  async refresh(): Promise<void> {
    const t = this.#db.t;
    const loaded: LoadedRow[] = await this.#db.orm.select().from(t.signingKeys).orderBy(asc(t.signingKeys.createdAt), asc(t.signingKeys.keyId));
    const entries: RingEntry[] = [];
    for (const row of loaded) {
      if (!this.pairs.has(row.keyId)) {
        const pair = signingKeyPairFrom(privateKeyFromPem(this.#box.open(row.sealedPrivateKey, signingKeyContext(row.keyId))));
        if (pair.keyId !== row.keyId) throw new Error(`signing key row ${row.keyId} holds another key`);
        this.pairs.set(row.keyId, pair);
      }
      entries.push({ key_id: row.keyId, public_key: row.publicKey, state: row.state as KeyState, created_at: row.createdAt, retired_at: row.retiredAt });
    }
    this.entries = entries;
  }

  async addNext(): Promise<SigningKeyPair> {
    const pair = generateSigningKeyPair();
    const sealed = this.#box.seal(privateKeyToPem(pair.privateKey), signingKeyContext(pair.keyId));
    const added = await this.#change(function* (tx, t) {
      const next = yield* rows(tx.select({ keyId: t.signingKeys.keyId }).from(t.signingKeys).where(eq(t.signingKeys.state, 'next')));
      if (next.length > 0) return false;
      yield* exec(
        tx.insert(t.signingKeys).values({ keyId: pair.keyId, publicKey: pair.publicKey, state: 'next', sealedPrivateKey: sealed, createdAt: Date.now(), retiredAt: null }),
      );
      return true;
    });
    await this.refresh();
    if (!added) throw new Error('a next key already exists; promote it first');
    return pair;
  }

  async promoteNext(now = Date.now()): Promise<{ active: string; retired: string }> {
    const change = await this.#change(function* (tx, t) {
      const [next] = yield* rows(tx.select({ keyId: t.signingKeys.keyId }).from(t.signingKeys).where(eq(t.signingKeys.state, 'next')));
      const [active] = yield* rows(tx.select({ keyId: t.signingKeys.keyId }).from(t.signingKeys).where(eq(t.signingKeys.state, 'active')));
      if (!next || !active) return null;
      yield* exec(tx.update(t.signingKeys).set({ state: 'retired', retiredAt: now }).where(eq(t.signingKeys.keyId, active.keyId)));
      yield* exec(tx.update(t.signingKeys).set({ state: 'active' }).where(eq(t.signingKeys.keyId, next.keyId)));
      return { active: next.keyId, retired: active.keyId };
    });
    await this.refresh();
    if (!change) throw new Error('no next key to promote; add one first');
    return change;
  }

  /** One transaction, taken in turn by every process. */
  #change<R>(body: TxBody<R>): Promise<R> {
    return lockedTransaction(this.#db, RING_LOCK, body);
  }
}

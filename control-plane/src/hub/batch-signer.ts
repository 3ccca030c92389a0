import { sign } from 'node:crypto';
import { signCommandBatch } from '@vmkit/protocol';
import type { CommandBatch, SigningKeyPair } from '@vmkit/protocol';

/** A command's signature, with its place in the batch when the signature covers several. */
export interface CommandSignature {
  signature: string;
  batch?: CommandBatch | undefined;
}

/** What a leaf's `prepare` gives: the text to sign, and whatever the caller wants back with the signature. */
export interface PreparedLeaf<P> {
  text: string;
  value: P;
}

interface Leaf {
  prepare(): PreparedLeaf<unknown>;
  resolve(signed: CommandSignature & { value: unknown }): void;
  reject(err: unknown): void;
}

interface OpenBatch {
  key: SigningKeyPair;
  leaves: Leaf[];
}

/**
 * Signs commands together: the `signPrepared` calls made with the same key until their batch is
 * signed (at the next `setImmediate`, or later while older batches go first, see #flush)
 * share one Ed25519 signature over a Merkle tree of them (@vmkit/protocol
 * command-batch.ts). A fan-out calling the bus for thousands of agents at once then pays
 * one signature per `maxLeaves` commands plus two hashes each, instead of a signature each
 * (about 30 µs). A batch of one is signed the
 * single way, so it needs no `batch` field.
 *
 * Why at most 1,024 leaves: the audit path, which every command frame carries, grows by
 * 44 bytes per doubling; past a thousand the signature is already under 0.1 µs a command.
 *
 * It takes the text as a function, called when its batch is signed: a
 * fan-out of thousands then keeps only what it needs to build each command while it
 * waits its turn, not the envelope and its canonical text, which the young generation's
 * scavenges would copy again and again.
 */
export class CommandBatchSigner {
  readonly #maxLeaves: number;
  readonly #open = new Map<string, OpenBatch>();
  readonly #sealed: OpenBatch[] = [];
  #scheduled = false;

  constructor(opts: { maxLeaves?: number } = {}) {
    this.#maxLeaves = Math.max(1, opts.maxLeaves ?? 1024);
  }

  /**
   * Signs what `prepare` gives, in this turn's batch for `key`; `prepare` runs when the
   * batch is signed. If it throws, this call rejects with its error and the rest of the
   * batch is signed without it.
   */
  signPrepared<P>(key: SigningKeyPair, prepare: () => PreparedLeaf<P>): Promise<CommandSignature & { value: P }> {
    return new Promise<CommandSignature & { value: P }>((resolve, reject) => {
      let batch = this.#open.get(key.keyId);
      if (!batch) {
        batch = { key, leaves: [] };
        this.#open.set(key.keyId, batch);
      }
      // The leaf list holds every type of value; each call gets back what its own prepare made.
      batch.leaves.push({ prepare, resolve: resolve as (signed: CommandSignature & { value: unknown }) => void, reject });
      if (batch.leaves.length >= this.#maxLeaves) {
        this.#open.delete(key.keyId);
        this.#sealed.push(batch);
      }
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => this.#flush());
      }
    });
  }

  /**
   * Signs one batch a turn, the oldest first, and leaves the rest to the next turns: the
   * commands of the first batch are stored and sent before the next batch is signed, and
   * results read meanwhile are handled between batches. A fan-out's first frames leave as
   * soon as one batch is ready instead of after every command of it is signed and stored,
   * so the agents work while the rest is prepared.
   */
  #flush(): void {
    this.#scheduled = false;
    const batch = this.#sealed.shift() ?? this.#takeOpen();
    if (!batch) return;
    if (this.#sealed.length > 0 || this.#open.size > 0) {
      this.#scheduled = true;
      setImmediate(() => this.#flush());
    }
    const { key } = batch;
    const leaves: Leaf[] = [];
    const prepared: PreparedLeaf<unknown>[] = [];
    for (const leaf of batch.leaves) {
      try {
        prepared.push(leaf.prepare());
        leaves.push(leaf);
      } catch (err) {
        leaf.reject(err);
      }
    }
    try {
      if (leaves.length === 0) return;
      if (leaves.length === 1) {
        const [only] = leaves as [Leaf];
        const [p] = prepared as [PreparedLeaf<unknown>];
        only.resolve({ signature: sign(null, Buffer.from(p.text, 'utf8'), key.privateKey).toString('base64url'), value: p.value });
        return;
      }
      const { signature, batches: places } = signCommandBatch(
        key.privateKey,
        prepared.map((p) => p.text),
      );
      leaves.forEach((l, i) => l.resolve({ signature, batch: places[i], value: prepared[i]?.value }));
    } catch (err) {
      for (const l of leaves) l.reject(err);
    }
  }

  /** The open batch that was opened first (of one key; several keys are rare: a rotation). */
  #takeOpen(): OpenBatch | undefined {
    for (const [keyId, batch] of this.#open) {
      this.#open.delete(keyId);
      return batch;
    }
    return undefined;
  }
}

import { sign, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { z } from 'zod';
import { lazySchema } from './lazy.ts';
import { MERKLE_HASH_BYTES, merkleLeafHash, merkleTree, rootFromInclusionProof } from './merkle.ts';

/**
 * Many commands, one Ed25519 signature: the control plane signs the root of a Merkle tree
 * (merkle.ts) whose leaves are exactly the bytes a single command's signature covers, and
 * each command travels with its leaf index, the tree size and its audit path. Signing a
 * fan-out of thousands of commands then costs one signature and two hashes per command
 * instead of a signature each. Sent only to agents that name `batch-signature` in the
 * upgrade header (messages.ts AGENT_FEATURES).
 *
 * The signed bytes have their own context, so a batch signature never verifies as a
 * single command's and a single command's never as a batch's (whose root would need to
 * be the 32 bytes that follow the size line).
 */
export const COMMAND_BATCH_SIGNING_CONTEXT = 'vmkit-command-batch-v1\n';
/** Longest audit path accepted: trees of up to 2^20 commands (the control plane makes them of at most 1,024). */
export const MAX_BATCH_PROOF_HASHES = 20;
export const MAX_BATCH_SIZE = 2 ** MAX_BATCH_PROOF_HASHES;

/** One 32-byte hash in canonical unpadded base64url (43 characters, the last one's two spare bits zero). */
const hashText = z
  .string()
  .regex(/^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/, `must be ${MERKLE_HASH_BYTES} bytes of base64url`);

/** A command's place in the batch its signature covers. */
export const commandBatchSchema = lazySchema(() =>
  z
    .strictObject({
      index: z.number().int().nonnegative(),
      size: z.number().int().min(1).max(MAX_BATCH_SIZE),
      proof: z.array(hashText).max(MAX_BATCH_PROOF_HASHES),
    })
    .refine((b) => b.index < b.size, { message: 'index must be less than size', path: ['index'] }),
);
export type CommandBatch = z.infer<typeof commandBatchSchema>;

/** What the batch signature signs: the context, the tree size in decimal, a newline, the 32-byte root. */
export function batchSigningBytes(size: number, root: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(`${COMMAND_BATCH_SIGNING_CONTEXT}${size}\n`, 'utf8'), root]);
}

export interface SignedCommandBatch {
  /** base64url Ed25519 signature over batchSigningBytes(size, root). */
  signature: string;
  /** Per leaf, in order: its place and audit path. */
  batches: CommandBatch[];
}

/**
 * Signs the leaves with one signature. Each leaf is what a single command signature would
 * sign: commandSigningBytes, or as text (UTF-8) commandSigningText.
 */
export function signCommandBatch(privateKey: KeyObject, leaves: readonly (Uint8Array | string)[]): SignedCommandBatch {
  if (leaves.length > MAX_BATCH_SIZE) throw new RangeError(`a batch holds at most ${MAX_BATCH_SIZE} commands`);
  const tree = merkleTree(leaves.map((l) => merkleLeafHash(l)));
  const signature = sign(null, batchSigningBytes(tree.size, tree.root), privateKey).toString('base64url');
  const batches = tree.proofs((h) => h.toString('base64url')).map((proof, index) => ({ index, size: tree.size, proof }));
  return { signature, batches };
}

/** Whether `signature` (64 raw bytes) signs a batch holding `leaf` at `batch.index`, under `publicKey`. */
export function verifyCommandBatch(publicKey: KeyObject, leaf: Uint8Array, batch: CommandBatch, signature: Uint8Array): boolean {
  const root = rootFromInclusionProof(
    batch.index,
    batch.size,
    merkleLeafHash(leaf),
    batch.proof.map((h) => Buffer.from(h, 'base64url')),
  );
  return root !== undefined && verify(null, batchSigningBytes(batch.size, root), publicKey, signature);
}

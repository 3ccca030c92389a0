import * as crypto from 'node:crypto';

/**
 * Merkle tree hashing of RFC 9162 (Certificate Transparency v2) §2.1 with SHA-256: leaves
 * and inner nodes are hashed with different prefixes (0x00, 0x01), so a leaf can never
 * pass for a node, and a tree of n leaves splits at the largest power of two smaller
 * than n (not the duplicate-the-last-node construction, under which two different leaf
 * lists share a root). Used to sign many commands with one signature (command-batch.ts).
 */
export const MERKLE_HASH_BYTES = 32;

const LEAF_PREFIX = Buffer.of(0x00);
const NODE_PREFIX = Buffer.of(0x01);

// One-shot `crypto.hash` (Node 21.7 and later) costs a third less than createHash per
// hash; the agent may still run on Node 18, which has only createHash.
const oneShot = typeof crypto.hash === 'function';
const sha256 = (data: Buffer | string): Buffer => (oneShot ? crypto.hash('sha256', data, 'buffer') : crypto.createHash('sha256').update(data).digest());

/**
 * MTH of one leaf: SHA-256(0x00 || leaf). A string leaf is its UTF-8 bytes (hashed without
 * copying them into a buffer first: a fan-out hashes thousands).
 */
export function merkleLeafHash(leaf: Uint8Array | string): Buffer {
  if (typeof leaf === 'string') return sha256(`\u0000${leaf}`);
  return sha256(Buffer.concat([LEAF_PREFIX, leaf], 1 + leaf.byteLength));
}

/** An inner node: SHA-256(0x01 || left || right). */
export function merkleNodeHash(left: Uint8Array, right: Uint8Array): Buffer {
  return sha256(Buffer.concat([NODE_PREFIX, left, right], 1 + left.byteLength + right.byteLength));
}

export interface MerkleTree {
  size: number;
  root: Buffer;
  /** The audit path of a leaf (RFC 9162 §2.1.3.1 PATH), from the leaf's sibling up. */
  proof(leafIndex: number): Buffer[];
  /** Every leaf's audit path, each node as `encode` gives it, encoded once however many paths share it. */
  proofs<T>(encode: (node: Buffer) => T): T[][];
}

/**
 * The tree over leaf hashes, built level by level: pairs are hashed and an odd last node
 * is carried up unhashed, which gives the same tree as the RFC's recursive split (the
 * left subtree always the largest power of two) in n - 1 hashes, all proofs included.
 */
export function merkleTree(leafHashes: readonly Buffer[]): MerkleTree {
  if (leafHashes.length === 0) throw new RangeError('a Merkle tree of commands has at least one leaf');
  const levels: Buffer[][] = [[...leafHashes]];
  for (let level = levels[0] as Buffer[]; level.length > 1; ) {
    const up: Buffer[] = [];
    for (let i = 0; i < level.length; i += 2) {
      const right = level[i + 1];
      up.push(right === undefined ? (level[i] as Buffer) : merkleNodeHash(level[i] as Buffer, right));
    }
    levels.push(up);
    level = up;
  }
  const size = leafHashes.length;
  return {
    size,
    root: (levels.at(-1) as Buffer[])[0] as Buffer,
    proof(leafIndex: number): Buffer[] {
      if (!Number.isSafeInteger(leafIndex) || leafIndex < 0 || leafIndex >= size) throw new RangeError(`no leaf ${leafIndex} in a tree of ${size}`);
      return pathOf(levels, leafIndex);
    },
    proofs<T>(encode: (node: Buffer) => T): T[][] {
      const encoded = levels.slice(0, -1).map((level) => level.map(encode));
      return leafHashes.map((_, i) => pathOf(encoded, i));
    },
  };
}

/** The siblings of leaf `leafIndex`'s ancestors, bottom up; an odd last node has none on its level. */
function pathOf<T>(levels: readonly T[][], leafIndex: number): T[] {
  const path: T[] = [];
  let i = leafIndex;
  for (let l = 0; l < levels.length; l++) {
    const sibling = (levels[l] as T[])[i ^ 1];
    if (sibling !== undefined) path.push(sibling);
    i = Math.floor(i / 2);
  }
  return path;
}

/**
 * The root an inclusion proof leads to (RFC 9162 §2.1.3.2), or undefined when the proof
 * cannot belong to a leaf `leafIndex` of a tree of `treeSize` (index out of range, a
 * path too long or too short, a hash not 32 bytes). Compare the result with the signed
 * root; never throws.
 */
export function rootFromInclusionProof(leafIndex: number, treeSize: number, leafHash: Uint8Array, proof: readonly Uint8Array[]): Buffer | undefined {
  if (!Number.isSafeInteger(leafIndex) || !Number.isSafeInteger(treeSize) || leafIndex < 0 || leafIndex >= treeSize) return undefined;
  if (leafHash.byteLength !== MERKLE_HASH_BYTES) return undefined;
  let fn = leafIndex;
  let sn = treeSize - 1;
  let r: Buffer = Buffer.from(leafHash);
  for (const p of proof) {
    if (p.byteLength !== MERKLE_HASH_BYTES || sn === 0) return undefined;
    if (fn % 2 === 1 || fn === sn) {
      r = merkleNodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      r = merkleNodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : undefined;
}

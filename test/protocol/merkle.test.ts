import { createHash } from 'node:crypto';
import t from 'tap';
import { merkleLeafHash, merkleNodeHash, merkleTree, rootFromInclusionProof } from '@vmkit/protocol';

// A straightforward reading of RFC 9162 §2.1.1 and §2.1.3.1, recursion and all, to hold the
// level-by-level tree and the verifier to.
const sha256 = (...parts: Buffer[]) => createHash('sha256').update(Buffer.concat(parts)).digest();
/** The largest power of two smaller than n (n > 1). */
const split = (n: number) => {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
};
function referenceRoot(leaves: Buffer[]): Buffer {
  if (leaves.length === 1) return sha256(Buffer.of(0), leaves[0] as Buffer);
  const k = split(leaves.length);
  return sha256(Buffer.of(1), referenceRoot(leaves.slice(0, k)), referenceRoot(leaves.slice(k)));
}
function referencePath(m: number, leaves: Buffer[]): Buffer[] {
  if (leaves.length === 1) return [];
  const k = split(leaves.length);
  return m < k
    ? [...referencePath(m, leaves.slice(0, k)), referenceRoot(leaves.slice(k))]
    : [...referencePath(m - k, leaves.slice(k)), referenceRoot(leaves.slice(0, k))];
}

const leavesOf = (n: number, tag = 'leaf'): Buffer[] => Array.from({ length: n }, (_, i) => Buffer.from(`${tag} ${i}`));
const treeOf = (leaves: Buffer[]) => merkleTree(leaves.map(merkleLeafHash));
/** Flips one bit of a copy. */
const flip = (b: Buffer, bit: number) => {
  const c = Buffer.from(b);
  c[bit >> 3] = (c[bit >> 3] as number) ^ (1 << (bit & 7));
  return c;
};
const verifies = (index: number, size: number, leaf: Buffer, proof: Buffer[], root: Buffer) =>
  rootFromInclusionProof(index, size, merkleLeafHash(leaf), proof)?.equals(root) === true;

t.test('the tree is RFC 9162\'s: root and every audit path match the recursive definition, sizes 1 to 65', async (t) => {
  let checked = 0;
  for (let n = 1; n <= 65; n++) {
    const leaves = leavesOf(n);
    const tree = treeOf(leaves);
    t.ok(tree.root.equals(referenceRoot(leaves)), `root of ${n}`);
    const all = tree.proofs((h) => h.toString('hex'));
    for (let i = 0; i < n; i++) {
      const proof = tree.proof(i);
      const ref = referencePath(i, leaves);
      if (proof.length !== ref.length || !proof.every((h, j) => h.equals(ref[j] as Buffer))) t.fail(`path of leaf ${i} of ${n}`);
      if (JSON.stringify(all[i]) !== JSON.stringify(ref.map((h) => h.toString('hex')))) t.fail(`proofs() of leaf ${i} of ${n}`);
      checked++;
    }
  }
  t.equal(checked, (65 * 66) / 2, 'every leaf of every size');
  t.equal(treeOf([Buffer.alloc(0)]).root.toString('hex'), sha256(Buffer.of(0)).toString('hex'), 'a lone empty leaf hashes to SHA-256(0x00)');
});

t.test('the hashes are domain-separated: a leaf is SHA-256(0x00 || bytes), a node SHA-256(0x01 || left || right)', async (t) => {
  const a = Buffer.from('a');
  const b = Buffer.from('b');
  t.ok(merkleLeafHash(a).equals(sha256(Buffer.of(0), a)));
  const text = 'vmkit-command-v1\n{"ünïcødé":"✓ 🎉"}';
  t.ok(merkleLeafHash(text).equals(sha256(Buffer.of(0), Buffer.from(text, 'utf8'))), 'a text leaf is its UTF-8 bytes');
  t.ok(merkleNodeHash(a, b).equals(sha256(Buffer.of(1), a, b)));
  // Two leaves whose concatenated hashes form a third leaf do not make that leaf's root.
  const two = treeOf([a, b]).root;
  t.notOk(treeOf([Buffer.concat([merkleLeafHash(a), merkleLeafHash(b)])]).root.equals(two), 'an inner node is no leaf');
  // The duplicate-last-node construction would give [a, b, c] and [a, b, c, c] one root.
  const c = Buffer.from('c');
  t.notOk(treeOf([a, b, c]).root.equals(treeOf([a, b, c, c]).root), 'a repeated last leaf changes the root');
});

t.test('every leaf of trees of 1 to 65 (and a few large ones) verifies at its index', async (t) => {
  let ok = 0;
  for (const n of [...Array.from({ length: 65 }, (_, i) => i + 1), 127, 128, 129, 1000, 1023, 1024, 1025, 4097]) {
    const leaves = leavesOf(n);
    const tree = treeOf(leaves);
    const indices = n <= 129 ? leaves.map((_, i) => i) : [0, 1, n >> 1, n - 2, n - 1];
    for (const i of indices) {
      if (verifies(i, n, leaves[i] as Buffer, tree.proof(i), tree.root)) ok++;
      else t.fail(`leaf ${i} of ${n}`);
    }
  }
  t.ok(ok > 2000, `${ok} proofs verified`);
});

// The size: a path often leads to the same root whatever size is claimed (leaf 0's path is
// the same in trees of 5 and 7 leaves), as in RFC 9162, where the signed tree head names
// the size. So the batch signature signs the size with the root, and the flipped size bits
// are tried against it (command-batch.test.ts).
t.test('any flipped bit of leaf, proof, index or root fails', async (t) => {
  let refused = 0;
  for (const n of [1, 2, 3, 5, 8, 13, 33, 64, 65]) {
    const leaves = leavesOf(n);
    const tree = treeOf(leaves);
    for (let i = 0; i < n; i++) {
      const leaf = leaves[i] as Buffer;
      const proof = tree.proof(i);
      const root = tree.root;
      const tries: [string, boolean][] = [];
      for (let bit = 0; bit < leaf.length * 8; bit += 3) tries.push([`leaf bit ${bit}`, verifies(i, n, flip(leaf, bit), proof, root)]);
      proof.forEach((h, j) => {
        for (let bit = 0; bit < 256; bit += 37) tries.push([`proof ${j} bit ${bit}`, verifies(i, n, leaf, proof.map((x, k) => (k === j ? flip(h, bit) : x)), root)]);
      });
      for (let bit = 0; bit < 256; bit += 29) tries.push([`root bit ${bit}`, verifies(i, n, leaf, proof, flip(root, bit))]);
      for (let bit = 0; bit < 12; bit++) tries.push([`index bit ${bit}`, verifies(i ^ (1 << bit), n, leaf, proof, root)]);
      tries.push(['a hash dropped', proof.length > 0 && verifies(i, n, leaf, proof.slice(1), root)]);
      tries.push(['a hash added', verifies(i, n, leaf, [...proof, root], root)]);
      tries.push(['hashes swapped', proof.length > 1 && verifies(i, n, leaf, [proof[1] as Buffer, proof[0] as Buffer, ...proof.slice(2)], root)]);
      for (const [what, passed] of tries) {
        if (passed) t.fail(`leaf ${i} of ${n}: ${what} still verifies`);
        else refused++;
      }
    }
  }
  t.ok(refused > 10_000, `${refused} tampered proofs refused`);
});

t.test('a proof from one tree does not verify in another', async (t) => {
  let refused = 0;
  for (const n of [2, 3, 7, 16, 31]) {
    const a = leavesOf(n, 'a');
    const b = leavesOf(n, 'b');
    const ta = treeOf(a);
    const tb = treeOf(b);
    // Another tree with the same leaf at the same place: its path leads to its own root only.
    const mixed = [...b];
    mixed[0] = a[0] as Buffer;
    const tm = treeOf(mixed);
    for (let i = 0; i < n; i++) {
      if (verifies(i, n, a[i] as Buffer, ta.proof(i), tb.root)) t.fail(`tree a's proof of ${i} against tree b's root`);
      else refused++;
      if (verifies(i, n, b[i] as Buffer, ta.proof(i), ta.root)) t.fail(`b's leaf ${i} with a's proof`);
      else refused++;
    }
    t.ok(verifies(0, n, a[0] as Buffer, tm.proof(0), tm.root), 'the shared leaf verifies in its own tree');
    t.notOk(verifies(0, n, a[0] as Buffer, tm.proof(0), ta.root), 'but not against the other tree\'s root');
  }
  t.equal(refused, 2 * (2 + 3 + 7 + 16 + 31));
});

t.test('the verifier never throws: out-of-range index and size, short hashes, too long or too short paths', async (t) => {
  const leaves = leavesOf(5);
  const tree = treeOf(leaves);
  const leafHash = merkleLeafHash(leaves[2] as Buffer);
  const proof = tree.proof(2);
  t.ok(rootFromInclusionProof(2, 5, leafHash, proof)?.equals(tree.root), 'the genuine one');
  for (const [what, index, size, lh, p] of [
    ['index = size', 5, 5, leafHash, proof],
    ['negative index', -1, 5, leafHash, proof],
    ['fractional index', 1.5, 5, leafHash, proof],
    ['size 0', 0, 0, leafHash, proof],
    ['NaN size', 2, NaN, leafHash, proof],
    ['huge size', 2, 2 ** 60, leafHash, proof],
    ['short leaf hash', 2, 5, leafHash.subarray(1), proof],
    ['short proof hash', 2, 5, leafHash, [proof[0]?.subarray(0, 31) ?? Buffer.alloc(0), ...proof.slice(1)]],
    ['long proof hash', 2, 5, leafHash, [Buffer.concat([proof[0] ?? Buffer.alloc(0), Buffer.of(0)]), ...proof.slice(1)]],
    ['empty proof', 2, 5, leafHash, []],
    ['proof past the root', 2, 5, leafHash, [...proof, ...proof]],
  ] as const) {
    t.equal(rootFromInclusionProof(index, size, lh, p), undefined, what);
  }
  t.ok(rootFromInclusionProof(0, 1, merkleLeafHash(Buffer.from('x')), [])?.equals(treeOf([Buffer.from('x')]).root), 'a tree of one: the root is the leaf hash');
  t.throws(() => merkleTree([]), RangeError, 'no tree of nothing');
  t.throws(() => tree.proof(5), RangeError, 'no proof for a leaf that is not there');
});

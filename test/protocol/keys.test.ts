import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import {
  decodePublicKey,
  encodePublicKey,
  generateSigningKeyPair,
  isPublicKeyText,
  keyIdOf,
  privateKeyFromPem,
  privateKeyFromSeed,
  privateKeyToPem,
  signingKeyPairFrom,
  signHello,
  verifyHello,
  newChallengeNonce,
  newId,
} from '@vmkit/protocol';

t.test('key ids are fingerprints of the public key', async (t) => {
  const a = generateSigningKeyPair();
  const b = generateSigningKeyPair();
  t.match(a.keyId, /^ed25519:[0-9a-f]{32}$/);
  t.equal(keyIdOf(a.publicKey), a.keyId, 'from the wire form');
  t.equal(keyIdOf(a.privateKey), a.keyId, 'from the private key');
  t.not(a.keyId, b.keyId, 'different keys, different ids');
});

t.test('public keys round-trip through their wire form', async (t) => {
  const k = generateSigningKeyPair();
  t.equal(k.publicKey.length, 43);
  t.equal(encodePublicKey(decodePublicKey(k.publicKey)), k.publicKey);
  t.ok(isPublicKeyText(k.publicKey));
  t.notOk(isPublicKeyText('abc'));
  t.notOk(isPublicKeyText(17));
  t.throws(() => decodePublicKey('!'.repeat(43)), TypeError);
});

t.test('private keys round-trip through PEM and come from seeds deterministically', async (t) => {
  const k = generateSigningKeyPair();
  t.equal(signingKeyPairFrom(privateKeyFromPem(privateKeyToPem(k.privateKey))).keyId, k.keyId);
  const seed = Buffer.alloc(32, 9);
  t.equal(signingKeyPairFrom(privateKeyFromSeed(seed)).keyId, signingKeyPairFrom(privateKeyFromSeed(seed)).keyId);
  t.throws(() => privateKeyFromSeed(Buffer.alloc(31)), TypeError);
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey;
  t.throws(() => privateKeyFromPem(rsa.export({ type: 'pkcs8', format: 'pem' }).toString()), TypeError);
  t.throws(() => encodePublicKey(rsa), TypeError);
});

t.test('the hello signature proves the agent holds its key, for this nonce only', async (t) => {
  const agent = generateSigningKeyPair();
  const other = generateSigningKeyPair();
  const id = newId('agent');
  const nonce = newChallengeNonce();
  const sig = signHello(agent.privateKey, id, nonce);
  const pub = decodePublicKey(agent.publicKey);
  t.ok(verifyHello(pub, id, nonce, sig));
  t.notOk(verifyHello(pub, id, newChallengeNonce(), sig), 'another nonce');
  t.notOk(verifyHello(pub, newId('agent'), nonce, sig), 'another agent id');
  t.notOk(verifyHello(decodePublicKey(other.publicKey), id, nonce, sig), 'another key');
  t.notOk(verifyHello(pub, id, nonce, 'garbage'), 'garbage signature');
});

import t from 'tap';
import {
  CLOCK_SKEW_MS,
  MAX_COMMAND_LIFETIME_MS,
  ReplayCache,
  commandEnvelopeSchema,
  newId,
  pinKeys,
  signCommand,
  signEnvelope,
  verifyCommand,
} from '@vmkit/protocol';
import type { SigningKeyPair, VerifyOptions } from '@vmkit/protocol';
import { fixtureKey } from '../helpers/fixtures.ts';

const cp = fixtureKey('control_plane');
const next = fixtureKey('control_plane_next');
const attacker = fixtureKey('attacker');
const AGENT = newId('agent');
const NOW = 1_764_000_000_000;

const pin = (...keys: SigningKeyPair[]) => pinKeys(keys.map((k) => ({ key_id: k.keyId, public_key: k.publicKey })));
const opts = (over: Partial<VerifyOptions> = {}): VerifyOptions => ({
  pinnedKeys: pin(cp),
  selfAgentId: AGENT,
  now: NOW + 1000,
  seen: new ReplayCache(),
  ...over,
});
const ping = (key = cp, over: { now?: number; lifetimeMs?: number; agentId?: string } = {}) =>
  signCommand(key, { agentId: over.agentId ?? AGENT, type: 'ping', params: {}, now: over.now ?? NOW, ...(over.lifetimeMs ? { lifetimeMs: over.lifetimeMs } : {}) });
const reason = (r: ReturnType<typeof verifyCommand>) => (r.ok ? 'ok' : r.reason);

t.test('a signed command verifies and comes back typed', async (t) => {
  const { envelope, signature } = signCommand(cp, {
    agentId: AGENT,
    type: 'harden',
    params: { deploy_keys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0tHq7f1 deploy@vmkit'], dry_run: false },
    now: NOW,
  });
  const res = verifyCommand(JSON.parse(JSON.stringify(envelope)), signature, opts());
  t.equal(reason(res), 'ok');
  if (res.ok && res.command.type === 'harden') t.same(res.command.params.deploy_keys.length, 1);
  t.match(envelope.id, /^cmd_[0-9a-z]{26}$/);
  t.equal(envelope.key_id, cp.keyId);
});

t.test('the signature covers key order independence: a re-ordered envelope still verifies', async (t) => {
  const { envelope, signature } = ping();
  const reordered = Object.fromEntries(Object.entries(envelope).reverse());
  t.equal(reason(verifyCommand(reordered, signature, opts())), 'ok', 'canonical JSON sorts keys');
});

t.test('each tampered field is rejected with the right reason', async (t) => {
  const { envelope, signature } = signCommand(cp, { agentId: AGENT, type: 'ping', params: {}, now: NOW });
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ['id', { id: newId('command') }, 'bad_signature'],
    ['agent_id', { agent_id: newId('agent') }, 'bad_signature'],
    ['type', { type: 'facts' }, 'bad_signature'],
    ['params', { type: 'harden', params: { deploy_keys: [], dry_run: true } }, 'bad_signature'],
    ['issued_at', { issued_at: NOW - 1 }, 'bad_signature'],
    ['expires_at', { expires_at: envelope.expires_at + 60_000 }, 'bad_signature'],
    ['nonce', { nonce: 'BBECAwQFBgcICQoLDA0ODxAR' }, 'bad_signature'],
    ['key_id (to a pinned key)', { key_id: next.keyId }, 'bad_signature'],
    ['key_id (to an unknown key)', { key_id: attacker.keyId }, 'unknown_key'],
    ['an added field', { extra: 1 }, 'malformed'],
    ['type (to one that does not exist)', { type: 'exec' }, 'malformed'],
    ['params (to an unknown field)', { params: { cmd: 'id' } }, 'malformed'],
  ];
  const pinned = pin(cp, next);
  for (const [field, patch, want] of cases) {
    t.equal(reason(verifyCommand({ ...envelope, ...patch }, signature, opts({ pinnedKeys: pinned }))), want, field);
  }
  const flipped = Buffer.from(signature, 'base64url');
  flipped[0] = (flipped[0] ?? 0) ^ 1;
  t.equal(reason(verifyCommand(envelope, flipped.toString('base64url'), opts())), 'bad_signature', 'signature bit flipped');
  t.equal(reason(verifyCommand(envelope, 'short', opts())), 'malformed', 'signature of the wrong length');
  t.equal(reason(verifyCommand(envelope, 42, opts())), 'malformed', 'signature of the wrong type');
  t.equal(reason(verifyCommand('ping', signature, opts())), 'malformed', 'envelope of the wrong type');
});

t.test('a command signed by an unpinned key is refused as unknown_key', async (t) => {
  const forged = ping(attacker);
  t.equal(reason(verifyCommand(forged.envelope, forged.signature, opts())), 'unknown_key');
});

t.test('a forged command claiming a pinned key id is refused as bad_signature', async (t) => {
  const { envelope } = ping();
  const sig = signEnvelope(attacker.privateKey, envelope);
  t.equal(reason(verifyCommand(envelope, sig, opts())), 'bad_signature');
});

t.test('a command for another agent is refused as wrong_agent', async (t) => {
  const other = ping(cp, { agentId: newId('agent') });
  t.equal(reason(verifyCommand(other.envelope, other.signature, opts())), 'wrong_agent');
});

t.test('expiry is enforced with the stated clock-skew allowance', async (t) => {
  const c = ping(cp, { lifetimeMs: 60_000 });
  const at = (now: number) => reason(verifyCommand(c.envelope, c.signature, opts({ now })));
  t.equal(at(NOW + 60_000), 'ok', 'at the expiry instant');
  t.equal(at(NOW + 60_000 + CLOCK_SKEW_MS), 'ok', 'within the skew after expiry');
  t.equal(at(NOW + 60_000 + CLOCK_SKEW_MS + 1), 'expired', 'past expiry plus skew');
});

t.test('a command from the future is refused as not_yet_valid beyond the skew', async (t) => {
  const c = ping();
  const at = (now: number) => reason(verifyCommand(c.envelope, c.signature, opts({ now })));
  t.equal(at(NOW - CLOCK_SKEW_MS), 'ok', 'agent clock behind by exactly the skew');
  t.equal(at(NOW - CLOCK_SKEW_MS - 1), 'not_yet_valid', 'agent clock behind by more');
  t.equal(at(NOW - 10 * 60_000, ), 'not_yet_valid');
});

t.test('a replayed command is refused, by id and by nonce', async (t) => {
  const c = ping();
  const seen = new ReplayCache();
  const first = verifyCommand(c.envelope, c.signature, opts({ seen }));
  t.equal(reason(first), 'ok');
  if (first.ok) seen.remember(first.command);
  t.equal(reason(verifyCommand(c.envelope, c.signature, opts({ seen }))), 'replayed', 'same command again');

  // Same nonce under a fresh id, signed properly: still a replay of the nonce.
  const sameNonce = { ...c.envelope, id: newId('command') };
  t.equal(reason(verifyCommand(sameNonce, signEnvelope(cp.privateKey, sameNonce), opts({ seen }))), 'replayed');
});

t.test('the replay cache forgets only what expiry already refuses, and round-trips', async (t) => {
  const c = ping(cp, { lifetimeMs: 60_000 });
  const seen = new ReplayCache();
  seen.remember(c.envelope);
  t.equal(seen.prune(NOW + 60_000 + CLOCK_SKEW_MS), 0, 'kept while the command could still verify');
  const restored = new ReplayCache([...seen.entries()]);
  t.ok(restored.has(c.envelope.id, 'x'), 'restored from entries');
  t.equal(restored.prune(NOW + 60_000 + CLOCK_SKEW_MS + 1), 1, 'dropped after');
  t.equal(restored.size, 0);
  t.notOk(restored.has('nope', c.envelope.nonce), 'its nonce is forgotten too');
  t.equal(reason(verifyCommand(c.envelope, c.signature, opts({ seen: restored, now: NOW + 60_000 + CLOCK_SKEW_MS + 1 }))), 'expired');
});

t.test('key rotation: both pinned keys verify, a retired key does not', async (t) => {
  const old = ping(cp);
  const fresh = ping(next);
  const both = pin(cp, next);
  t.equal(reason(verifyCommand(old.envelope, old.signature, opts({ pinnedKeys: both }))), 'ok', 'old key while pinned');
  t.equal(reason(verifyCommand(fresh.envelope, fresh.signature, opts({ pinnedKeys: both }))), 'ok', 'new key once pinned');
  const retired = pin(next);
  t.equal(reason(verifyCommand(old.envelope, old.signature, opts({ pinnedKeys: retired }))), 'unknown_key', 'old key after retirement');
  t.equal(reason(verifyCommand(fresh.envelope, fresh.signature, opts({ pinnedKeys: retired }))), 'ok');
});

t.test('pinning refuses a key whose id does not match it', async (t) => {
  t.throws(() => pinKeys([{ key_id: cp.keyId, public_key: next.publicKey }]), /does not match/);
});

t.test('the control plane cannot sign what agents would refuse', async (t) => {
  t.throws(() => ping(cp, { lifetimeMs: MAX_COMMAND_LIFETIME_MS + 1 }), 'lifetime over the limit');
  t.throws(() => signCommand(cp, { agentId: 'inst_x', type: 'ping', params: {} }), 'addressee is not an agent id');
  t.throws(() =>
    signCommand(cp, { agentId: AGENT, type: 'harden', params: { deploy_keys: ['not a key'], dry_run: false } }),
  );
  const ok = commandEnvelopeSchema.safeParse({ ...ping().envelope, expires_at: NOW });
  t.notOk(ok.success, 'expires_at must come after issued_at');
});

t.test('checks run in a fixed order: the first failure is the reason', async (t) => {
  // Expired, for another agent, and signed by an unknown key: unknown_key wins.
  const c = ping(attacker, { agentId: newId('agent'), lifetimeMs: 1000 });
  t.equal(reason(verifyCommand(c.envelope, c.signature, opts({ now: NOW + 3_600_000 }))), 'unknown_key');
  // Valid signature but for another agent and expired: wrong_agent wins over expired.
  const d = ping(cp, { agentId: newId('agent'), lifetimeMs: 1000 });
  t.equal(reason(verifyCommand(d.envelope, d.signature, opts({ now: NOW + 3_600_000 }))), 'wrong_agent');
});

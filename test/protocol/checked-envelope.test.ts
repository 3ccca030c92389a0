import { isDeepStrictEqual } from 'node:util';
import t from 'tap';
import fc from 'fast-check';
import {
  MAX_COMMAND_LIFETIME_MS,
  ReplayCache,
  canonicalJson,
  checkedEnvelope,
  commandEnvelopeSchema,
  generateSigningKeyPair,
  newId,
  pinKeys,
  signCommand,
  verifyCommand,
} from '@vmkit/protocol';
import { NUMBER_EDGES } from './edge-values.ts';

const key = generateSigningKeyPair();
const signed = signCommand(key, { agentId: newId('agent'), type: 'ping', params: {} });
const valid = { ...signed.envelope } as Record<string, unknown>;
const SSH_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test';

t.test('an envelope signCommand builds takes the quick path, and an agent accepts what it signs', async (t) => {
  t.ok(checkedEnvelope(valid));
  const harden = { ...valid, type: 'harden', params: { deploy_keys: [`${SSH_KEY} é\u2028"\\`], dry_run: true } };
  t.equal(checkedEnvelope(harden)?.canonical, canonicalJson(harden), 'params with text to escape: the same bytes as canonicalJson');
  const shell = { ...valid, type: 'shell.open', params: { term: 'xterm', rows: 24, cols: 80, channel: 1, env: { TZ: 'UTC', LANG: 'C' } } };
  t.equal(checkedEnvelope(shell)?.canonical, canonicalJson(shell), 'params whose keys are not in order: sorted as canonicalJson sorts them');
  const agentId = newId('agent');
  const cmd = signCommand(key, { agentId, type: 'harden', params: { deploy_keys: [`${SSH_KEY} ünïcode`], dry_run: false } });
  const verdict = verifyCommand(cmd.envelope, cmd.signature, {
    pinnedKeys: pinKeys([{ key_id: key.keyId, public_key: key.publicKey }]),
    selfAgentId: agentId,
    now: Date.now(),
    seen: new ReplayCache(),
  });
  t.ok(verdict.ok, 'verifies over the envelope as sent');
});

const values = fc.constantFrom<unknown>(
  valid.id,
  `${String(valid.id)}0`,
  [valid.id],
  valid.agent_id,
  newId('instance'),
  valid.key_id,
  'ed25519:' + 'A'.repeat(32),
  'ed25519:' + 'a'.repeat(31),
  valid.nonce,
  'A'.repeat(21),
  'A'.repeat(22),
  'A'.repeat(86),
  'A'.repeat(87),
  'AAAAAAAAAAAAAAAAAAAAAA+A',
  valid.issued_at,
  Number(valid.issued_at) + 1,
  Number(valid.issued_at) - 1,
  Number(valid.issued_at) + MAX_COMMAND_LIFETIME_MS,
  Number(valid.issued_at) + MAX_COMMAND_LIFETIME_MS + 1,
  ...NUMBER_EDGES,
  Number.NaN,
  '1',
  null,
  undefined,
  'ping',
  'facts',
  'harden',
  'shell.open',
  'keys.rotate',
  'agent.update',
  'toString',
  '__proto__',
  {},
  { x: 1 },
  { deploy_keys: [SSH_KEY], dry_run: false },
  { deploy_keys: ['not a key'], dry_run: false },
  { add: [], retire: [] },
  { term: 'xterm', rows: 24, cols: 80, channel: 1 },
);
/** issued_at and expires_at moved together, so the bounds of each are reached with a valid lifetime between them. */
const window = fc
  .tuple(
    fc.constantFrom(-1, -0, 0, 1.5, 8.64e15 - 1_000, 8.64e15 - 1, 8.64e15, 2 ** 53 - 1_000, 2 ** 53, Number.NaN),
    fc.constantFrom(1, 0.5, 1_000, MAX_COMMAND_LIFETIME_MS, MAX_COMMAND_LIFETIME_MS + 1),
  )
  .map(([issued, lifetime]): [number, number] => [issued, issued + lifetime]);
const fields = fc.constantFrom('id', 'agent_id', 'type', 'params', 'issued_at', 'expires_at', 'nonce', 'key_id');

t.test('the quick path accepts nothing the schema refuses; what it accepts is the same envelope and the same canonical bytes', async (t) => {
  let quick = 0;
  let refused = 0;
  fc.assert(
    fc.property(fc.array(fc.tuple(fields, values), { maxLength: 3 }), fc.option(window), fc.boolean(), (edits, times, extra) => {
      const c: Record<string, unknown> = { ...valid };
      if (times) [c.issued_at, c.expires_at] = times;
      for (const [k, v] of edits) c[k] = v;
      if (extra) c.extra = 1;
      const parsed = commandEnvelopeSchema.safeParse(c);
      if (!parsed.success) refused++;
      const checked = checkedEnvelope(c);
      if (checked === undefined) return true;
      quick++;
      return parsed.success && isDeepStrictEqual(checked.envelope, parsed.data) && checked.canonical === canonicalJson(parsed.data);
    }),
    { numRuns: 20_000 },
  );
  t.ok(quick > 100, `many took the quick path (${quick})`);
  t.ok(refused > 100, `many were refused (${refused})`);
});

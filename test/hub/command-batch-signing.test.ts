import t from 'tap';
import { PROTOCOL_VERSION, ReplayCache, commandSigningText, generateSigningKeyPair, newId, pinKeys, verifyCommand } from '@vmkit/protocol';
import type { MessageOf, SigningKey, SigningKeyPair } from '@vmkit/protocol';
import { CommandBatchSigner } from '../../control-plane/src/hub/batch-signer.ts';
import type { CommandSignature } from '../../control-plane/src/hub/batch-signer.ts';
import type { HubLogger } from '../../control-plane/src/hub/agent-hub.ts';
import { rawExec, sql } from '../../control-plane/src/db/raw.ts';
import { FakeAgent } from './fake-agent.ts';
import { startHub, until } from './hub-setup.ts';
import type { HubFixture } from './hub-setup.ts';

const BATCH = 'batch-signature';

/** What the agent would decide: verifyCommand under the keys of its welcome, with the frame's batch field. */
const verdict = (agentId: string, keys: SigningKey[], cmd: MessageOf<'command'>) =>
  verifyCommand(cmd.envelope, cmd.signature, { pinnedKeys: pinKeys(keys), selfAgentId: agentId, now: Date.now(), seen: new ReplayCache() }, cmd.batch);

interface Connected {
  agentId: string;
  key: Awaited<ReturnType<HubFixture['addAgent']>>['key'];
  agent: FakeAgent;
  keys: SigningKey[];
}

async function connect(fx: HubFixture, features?: string, enrolled?: Awaited<ReturnType<HubFixture['addAgent']>>): Promise<Connected> {
  const { agentId, key } = enrolled ?? (await fx.addAgent());
  const { agent, welcome, error } = await FakeAgent.connect(fx.url, agentId, key, features === undefined ? {} : { features });
  if (!welcome) throw new Error(`not welcomed: ${error?.key ?? 'no answer'}`);
  return { agentId, key, agent, keys: welcome.signing_keys };
}

/** What a single command signature would sign, for a made-up command. */
const leaf = () => commandSigningText(JSON.stringify({ id: newId('command') }));
/** One text signed in `signer`'s batch for `key`, with nothing carried back. */
const signText = (signer: CommandBatchSigner, key: SigningKeyPair, text: string): Promise<CommandSignature> =>
  signer.signPrepared(key, () => ({ text, value: undefined }));

const nextCommand = async (a: Connected) => (await a.agent.next('command')) as MessageOf<'command'>;
const answer = (a: Connected, cmd: MessageOf<'command'>) =>
  a.agent.send({ protocol: PROTOCOL_VERSION, type: 'result', command_id: cmd.envelope.id, status: 'succeeded', output: { pong: true }, finished_at: Date.now() });

t.test('a fan-out to agents that read batch signatures is signed once: every command verifies, all share one signature', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const agents: Connected[] = [];
  for (let i = 0; i < 12; i++) agents.push(await connect(fx, `queued, ${BATCH}`));
  const pending = agents.map((a) => fx.bus.send(a.agentId, 'ping', {}));
  const commands = await Promise.all(agents.map(nextCommand));
  t.ok(commands.every((c, i) => verdict((agents[i] as Connected).agentId, (agents[i] as Connected).keys, c).ok), 'all 12 verify as their agent would verify them');
  t.equal(new Set(commands.map((c) => c.signature)).size, 1, 'one signature for all');
  t.ok(commands.every((c) => c.batch?.size === 12), 'each names the batch of 12');
  t.same(commands.map((c) => c.batch?.index).sort((a, b) => Number(a) - Number(b)), [...Array(12).keys()], 'each its own place');
  const stored = await fx.bus.get(String(commands[0]?.envelope.id));
  t.same({ signature: stored?.signature, batch: stored?.batch }, { signature: commands[0]?.signature, batch: commands[0]?.batch }, 'on file as sent: signature and place');
  commands.forEach((c, i) => answer(agents[i] as Connected, c));
  t.equal((await Promise.all(pending)).length, 12, 'all 12 answered');
  await Promise.all(agents.map((a) => a.agent.close()));
});

t.test('agents without the feature get single signatures in the same fan-out; a lone command is signed singly', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const readers = [await connect(fx, BATCH), await connect(fx, BATCH), await connect(fx, BATCH)];
  const others = [await connect(fx), await connect(fx, 'queued'), await connect(fx, 'batch-signatures,')];
  const all = [...readers, ...others];
  const pending = all.map((a) => fx.bus.send(a.agentId, 'ping', {}));
  const commands = await Promise.all(all.map(nextCommand));
  t.ok(commands.every((c, i) => verdict((all[i] as Connected).agentId, (all[i] as Connected).keys, c).ok), 'all six verify');
  t.ok(commands.slice(0, 3).every((c) => c.batch?.size === 3), 'the three readers share a batch of three');
  t.ok(commands.slice(3).every((c) => !('batch' in c)), 'the others get no batch field (their strict schema would refuse it)');
  t.equal(new Set(commands.map((c) => c.signature)).size, 4, 'one batch signature and three single ones');
  commands.forEach((c, i) => answer(all[i] as Connected, c));
  await Promise.all(pending);

  const lone = readers[0] as Connected;
  const one = fx.bus.send(lone.agentId, 'ping', {});
  const cmd = await nextCommand(lone);
  t.notOk('batch' in cmd, 'a batch of one is a single signature');
  t.ok(verdict(lone.agentId, lone.keys, cmd).ok, 'and verifies as one');
  answer(lone, cmd);
  await one;
  await Promise.all(all.map((a) => a.agent.close()));
});

t.test('a fan-out larger than the batch cap is signed in batches of the cap', async (t) => {
  const fx = await startHub({}, { maxBatchLeaves: 4 });
  t.teardown(() => fx.close());
  const agents: Connected[] = [];
  for (let i = 0; i < 10; i++) agents.push(await connect(fx, BATCH));
  const pending = agents.map((a) => fx.bus.send(a.agentId, 'ping', {}));
  const commands = await Promise.all(agents.map(nextCommand));
  t.ok(commands.every((c, i) => verdict((agents[i] as Connected).agentId, (agents[i] as Connected).keys, c).ok), 'all verify');
  const sizes = new Map<string, number>();
  for (const c of commands) sizes.set(c.signature, Number(c.batch?.size ?? 1));
  t.same([...sizes.values()].sort(), [2, 4, 4], 'three signatures: 4 + 4 + 2');
  commands.forEach((c, i) => answer(agents[i] as Connected, c));
  await Promise.all(pending);
  await Promise.all(agents.map((a) => a.agent.close()));
});

t.test('commands that wait before delivery are signed singly, even for agents that read batches', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  // Queued for agents not connected yet: they may come back as an older version.
  const away = [await fx.addAgent(), await fx.addAgent()];
  const queued = away.map((a) => fx.bus.send(a.agentId, 'ping', {}));
  await until(async () => (await fx.store.commands.size()) === 2, 30_000, 'both stored');
  const back = [await connect(fx, BATCH, away[0]), await connect(fx, BATCH, away[1])];
  const fromQueue = await Promise.all(back.map(nextCommand));
  t.ok(fromQueue.every((c) => !('batch' in c)), 'queued commands carry single signatures');
  t.ok(fromQueue.every((c, i) => verdict((back[i] as Connected).agentId, (back[i] as Connected).keys, c).ok), 'which verify');
  fromQueue.forEach((c, i) => answer(back[i] as Connected, c));
  await Promise.all(queued);
  // onCommandId runs between storing and delivering: not delivered straight away either.
  const recorded = back.map((a) => fx.bus.send(a.agentId, 'ping', {}, { onCommandId: () => undefined }));
  const afterHook = await Promise.all(back.map(nextCommand));
  t.ok(afterHook.every((c) => !('batch' in c)), 'commands with onCommandId carry single signatures');
  afterHook.forEach((c, i) => answer(back[i] as Connected, c));
  await Promise.all(recorded);
  await Promise.all(back.map((a) => a.agent.close()));
});

t.test('re-delivery after a reconnect: the same batch frame to a connection that reads it, a single signature to one that does not', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const agents = [await connect(fx, BATCH), await connect(fx, BATCH), await connect(fx, BATCH)];
  const pending = agents.map((a) => fx.bus.send(a.agentId, 'ping', {}));
  const commands = await Promise.all(agents.map(nextCommand));
  const [first, ...rest] = agents as [Connected, ...Connected[]];
  const original = commands[0] as MessageOf<'command'>;
  t.equal(original.batch?.size, 3);
  rest.forEach((a, i) => answer(a, commands[i + 1] as MessageOf<'command'>));

  first.agent.kill();
  await until(() => !fx.hub.isConnected(first.agentId), 30_000, 'hub noticed');
  const again = await connect(fx, BATCH, first);
  const resent = await nextCommand(again);
  t.same(resent, original, 'the same frame, byte for byte: envelope, batch signature, place');
  t.ok(verdict(first.agentId, again.keys, resent).ok, 'and it verifies');

  again.agent.kill();
  await until(() => !fx.hub.isConnected(first.agentId), 30_000, 'hub noticed');
  const older = await connect(fx, undefined, first);
  const single = await nextCommand(older);
  t.same(single.envelope, original.envelope, 'the same envelope (same id and nonce: the replay cache still holds)');
  t.notOk('batch' in single, 'no batch field for a connection that did not name the feature');
  t.not(single.signature, original.signature, 're-signed singly');
  t.ok(verdict(first.agentId, older.keys, single).ok, 'and the single signature verifies');
  t.equal((await fx.bus.get(original.envelope.id as string))?.batch?.size, 3, 'the stored command keeps its batch signature');
  answer(older, single);
  t.equal((await Promise.all(pending)).length, 3, 'every command answered');
  await older.agent.close();
  await Promise.all(rest.map((a) => a.agent.close()));
});

t.test('a batch-signed command back in the queue (its agent left as it was sent) goes out re-signed to a connection without the feature', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const agents = [await connect(fx, BATCH), await connect(fx, BATCH)];
  const [first, second] = agents as [Connected, Connected];
  const pending = agents.map((a) => fx.bus.send(a.agentId, 'ping', {}));
  const [cmd, other] = (await Promise.all(agents.map(nextCommand))) as [MessageOf<'command'>, MessageOf<'command'>];
  answer(second, other);
  first.agent.kill();
  await until(() => !fx.hub.isConnected(first.agentId), 30_000, 'hub noticed');
  // As #deliverStoredAsSent leaves a command whose agent was gone when its insert committed.
  await rawExec(fx.db, sql`UPDATE commands SET state = 'queued' WHERE id = ${cmd.envelope.id as string}`);
  const older = await connect(fx, undefined, first);
  const single = await nextCommand(older);
  t.same(single.envelope, cmd.envelope, 'the same envelope');
  t.notOk('batch' in single, 'without the batch field');
  t.ok(verdict(first.agentId, older.keys, single).ok, 'under a single signature that verifies');
  t.equal((await fx.store.commands.get(cmd.envelope.id as string))?.state, 'sent', 'moved to sent');
  answer(older, single);
  t.equal((await Promise.all(pending)).length, 2);
  await older.agent.close();
  await second.agent.close();
});

t.test('a stored batch-signed command whose signature no longer verifies is not re-signed for an agent without the feature', async (t) => {
  const errors: string[] = [];
  const logger: HubLogger = { debug() {}, info() {}, warn() {}, error: (_o, msg) => errors.push(msg ?? '') };
  const fx = await startHub({}, { logger });
  t.teardown(() => fx.close());
  const agents = [await connect(fx, BATCH), await connect(fx, BATCH)];
  const [victim, other] = agents as [Connected, Connected];
  const pending = agents.map((a) => fx.bus.send(a.agentId, 'ping', {}, { timeoutMs: 3_000 }));
  const [cmd, otherCmd] = (await Promise.all(agents.map(nextCommand))) as [MessageOf<'command'>, MessageOf<'command'>];
  answer(other, otherCmd);
  victim.agent.kill();
  await until(() => !fx.hub.isConnected(victim.agentId), 30_000, 'hub noticed');
  // Someone with write access to the database changes the envelope under the genuine batch signature.
  const forged = { ...cmd.envelope, expires_at: Number(cmd.envelope.expires_at) - 1 };
  await rawExec(fx.db, sql`UPDATE commands SET envelope = ${JSON.stringify(forged)} WHERE id = ${cmd.envelope.id as string}`);
  const older = await connect(fx, undefined, victim);
  await until(() => errors.some((m) => m.includes('could not be re-signed')), 30_000, 'the refusal logged');
  t.equal(older.agent.received.filter((m) => m.type === 'command').length, 0, 'nothing was signed or sent for the forged envelope');
  const [victimOutcome] = await Promise.allSettled(pending);
  t.equal(victimOutcome?.status, 'rejected', 'its caller is told the command timed out');
  // A connection that reads batches gets the stored frame, and the agent refuses it.
  older.agent.kill();
  await until(() => !fx.hub.isConnected(victim.agentId), 30_000, 'hub noticed');
  await rawExec(fx.db, sql`UPDATE commands SET state = 'sent' WHERE id = ${cmd.envelope.id as string}`);
  const reader = await connect(fx, BATCH, victim);
  const asStored = await nextCommand(reader);
  t.match(verdict(victim.agentId, reader.keys, asStored), { ok: false, reason: 'bad_signature' }, 'the agent refuses it: bad_signature');
  await reader.agent.close();
  await other.agent.close();
});

t.test('the batch signer: one batch per key and turn, at most the cap, a lone command signed singly', async (t) => {
  const signer = new CommandBatchSigner({ maxLeaves: 2 });
  const k1 = generateSigningKeyPair();
  const k2 = generateSigningKeyPair();
  const sameTurn = await Promise.all([signText(signer, k1, leaf()), signText(signer, k1, leaf()), signText(signer, k1, leaf()), signText(signer, k2, leaf()), signText(signer, k2, leaf())]);
  t.same(
    sameTurn.map((s) => s.batch?.size ?? 1),
    [2, 2, 1, 2, 2],
    'k1: a batch of two and a lone one; k2: its own batch of two',
  );
  t.equal(new Set(sameTurn.map((s) => s.signature)).size, 3, 'three signatures');
  const a = await signText(signer, k1, leaf());
  const b = await signText(signer, k1, leaf());
  t.ok(a.batch === undefined && b.batch === undefined && a.signature !== b.signature, 'calls in different turns are signed apart');
});

t.test('the batch signer signs one batch a turn, the oldest first, so the first commands go out before the rest are signed', async (t) => {
  const signer = new CommandBatchSigner({ maxLeaves: 2 });
  const k = generateSigningKeyPair();
  const settled: number[] = [];
  const all = Array.from({ length: 5 }, (_, i) =>
    signText(signer, k, leaf()).then((s) => {
      settled.push(i);
      return s;
    }),
  );
  await all[0];
  t.same(settled, [0, 1], 'the first batch is signed and handed back before the second is signed');
  await all[2];
  t.same(settled, [0, 1, 2, 3], 'the second batch in the next turn');
  const late = signText(signer, k, leaf());
  const signed = await Promise.all([...all, late]);
  t.same(
    signed.map((s) => s.batch?.size ?? 1),
    [2, 2, 2, 2, 2, 2],
    'the open batch waited behind the sealed ones and took a call made meanwhile',
  );
  t.equal(signed[4]?.signature, signed[5]?.signature, 'the last two share a signature');
  t.equal(new Set(signed.map((s) => s.signature)).size, 3, 'three signatures for six commands');
});

t.test('the batch signer builds each leaf when its batch is signed; a leaf that fails to build fails alone', async (t) => {
  const signer = new CommandBatchSigner({ maxLeaves: 8 });
  const k = generateSigningKeyPair();
  let built = 0;
  const build = (i: number) => () => {
    built++;
    if (i === 1) throw new Error('params refused');
    return { text: leaf(), value: i };
  };
  const calls = [0, 1, 2].map((i) => signer.signPrepared(k, build(i)));
  t.equal(built, 0, 'nothing is built while the calls wait for their batch');
  const [first, failed, third] = await Promise.allSettled(calls);
  t.equal(built, 3, 'all built when the batch was signed');
  t.match(failed, { status: 'rejected', reason: { message: 'params refused' } }, 'the one that failed to build rejects with its own error');
  if (first?.status !== 'fulfilled' || third?.status !== 'fulfilled') throw new Error('the other two should be signed');
  t.same([first.value.value, third.value.value], [0, 2], 'each call gets back what its own build made');
  t.same([first.value.batch?.size, third.value.batch?.size], [2, 2], 'the batch is the two that were built');
  t.equal(first.value.signature, third.value.signature, 'they share one signature');
});

t.test('a command the protocol refuses fails its own send; the rest of its batch goes out', async (t) => {
  const fx = await startHub();
  t.teardown(() => fx.close());
  const agents = [await connect(fx, BATCH), await connect(fx, BATCH), await connect(fx, BATCH)];
  const [a, bad, c] = agents as [Connected, Connected, Connected];
  const good = [a, c].map((x) => fx.bus.send(x.agentId, 'ping', {}));
  // Not a valid harden: the envelope is checked as the command is built, in its batch.
  const refused = fx.bus.send(bad.agentId, 'harden', { deploy_keys: 'not a list', dry_run: true } as unknown as { deploy_keys: string[]; dry_run: boolean }).then(
    () => undefined,
    (err: unknown) => err,
  );
  const commands = await Promise.all([a, c].map(nextCommand));
  t.ok(commands.every((cmd, i) => verdict(([a, c][i] as Connected).agentId, ([a, c][i] as Connected).keys, cmd).ok), 'the two others verify');
  t.ok(commands.every((cmd) => cmd.batch?.size === 2), 'as a batch of two');
  t.match(await refused, { name: 'ZodError', message: /deploy_keys/ }, 'the refused one rejects with why');
  commands.forEach((cmd, i) => answer([a, c][i] as Connected, cmd));
  await Promise.all(good);
  t.equal(bad.agent.received.filter((m) => m.type === 'command').length, 0, 'nothing went to the third agent');
  await Promise.all(agents.map((x) => x.agent.close()));
});

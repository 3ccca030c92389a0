// The shared wire corpus (test/fixtures/wire) on the control plane's side: the enroll
// route against every enroll request, and the harden service against every harden
// result a (fake) agent could answer with.
import t from 'tap';
import { generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { PROTOCOL_VERSION, encodePublicKey, enrollResponseSchema, parseMessage } from '@vmkit/protocol';
import { startTestControlPlane, uniqueInstanceName } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { wireFixtures } from '../helpers/fixtures.ts';
import { FakeAgent } from './fake-agent.ts';

interface ErrorAnswer {
  error: string;
  message: string;
  detail?: Record<string, unknown>;
}

async function newInstanceToken(cp: TestControlPlane, name: string): Promise<{ instanceId: string; token: string }> {
  const inst = await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: uniqueInstanceName(name) } });
  if (inst.status !== 201) throw new Error(`POST /api/instances: ${inst.status}`);
  const tok = await cp.api<{ token: string }>('POST', `/api/instances/${inst.body.id}/enrollment-token`);
  if (tok.status !== 201) throw new Error(`enrollment-token: ${tok.status}`);
  return { instanceId: inst.body.id, token: tok.body.token };
}

const enrollRequest = (cp: TestControlPlane, body: unknown) => cp.api<Record<string, unknown>>('POST', '/api/agents/enroll', { key: null, body });

t.test('the corpus enroll request enrolls, and the answer is an enroll_response the agent parses', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  for (const fx of wireFixtures('valid', 'enroll_request')) {
    const { instanceId, token } = await newInstanceToken(cp, 'wire-valid');
    const res = await enrollRequest(cp, { ...fx.value, token });
    t.equal(res.status, 201, `${fx.name}: enrolled (${fx.description})`);
    const answer = enrollResponseSchema.safeParse(res.body);
    t.ok(answer.success, `${fx.name}: the answer parses with the shared schema, no field more or less`);
    t.equal(answer.data?.instance_id, instanceId, `${fx.name}: for the token's instance`);
  }
});

t.test('every invalid enroll request in the corpus is refused 400 naming the field, and the token stays usable', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const { token } = await newInstanceToken(cp, 'wire-invalid');
  const cases = wireFixtures('invalid', 'enroll_request');
  t.ok(cases.length >= 4, `${cases.length} cases`);
  for (const fx of cases) {
    if (fx.expect.ok) throw new Error(`${fx.name} expects ok`);
    // The corpus token is a placeholder; a real one shows the refusal is about the shape.
    const body = fx.value.token === '' ? fx.value : { ...fx.value, token };
    const res = await enrollRequest(cp, body);
    t.equal(res.status, 400, `${fx.name}: 400 (${fx.description})`);
    t.equal(res.body.error, 'invalid_request', `${fx.name}: invalid_request`);
    if (fx.expect.path === '') {
      const unknown = Object.keys(fx.value).filter((k) => !(k in (wireFixtures('valid', 'enroll_request')[0]?.value ?? {})));
      t.match(res.body.message, new RegExp(`^Invalid request: body\\b.*"${unknown.join('|')}"`), `${fx.name}: the message names the unknown field ${unknown.join(', ')}`);
    } else {
      t.match(res.body.message, `Invalid request: body.${fx.expect.path}: `, `${fx.name}: the message names ${fx.expect.path}`);
    }
  }
  const valid = wireFixtures('valid', 'enroll_request')[0];
  if (!valid) throw new Error('no valid enroll request in the corpus');
  t.equal((await enrollRequest(cp, { ...valid.value, token })).status, 201, 'the token was never spent by a refused request');
});

/** An enrolled, connected agent that answers a harden command with the given output. */
async function hardenAnswering(cp: TestControlPlane, name: string) {
  const { instanceId, token } = await newInstanceToken(cp, name);
  const { privateKey, publicKey }: { privateKey: KeyObject; publicKey: KeyObject } = generateKeyPairSync('ed25519');
  const e = await enrollRequest(cp, { token, public_key: encodePublicKey(publicKey), hostname: name, os: 'test', agent_version: 'test' });
  if (e.status !== 201) throw new Error(`enroll: ${e.status}`);
  const { agent } = await FakeAgent.connect(`${cp.url.replace('http:', 'ws:')}/agent/v1/connect`, String(e.body.agent_id), privateKey);
  let reply: (id: string) => void = () => undefined;
  agent.ws.on('message', (data: Buffer) => {
    const parsed = parseMessage(data);
    if (parsed.ok && parsed.message.type === 'command' && parsed.message.envelope.type === 'harden') reply(String(parsed.message.envelope.id));
  });
  return {
    instanceId,
    agent,
    answerWith(result: { status: 'succeeded' | 'failed'; output: Record<string, unknown>; error?: { key: string; message: string } }) {
      reply = (id) => {
        agent.send({ protocol: PROTOCOL_VERSION, type: 'ack', command_id: id });
        agent.sendRaw(JSON.stringify({ protocol: PROTOCOL_VERSION, type: 'result', command_id: id, finished_at: Date.now(), ...result }));
      };
    },
  };
}

const harden = (cp: TestControlPlane, instanceId: string) =>
  cp.api<Record<string, unknown> & ErrorAnswer>('POST', `/api/instances/${instanceId}/harden`, { body: { wait_ms: 60_000 } });

t.test('the control plane accepts every valid harden result in the corpus as the agent sent it', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const vm = await hardenAnswering(cp, 'wire-harden-valid');
  t.teardown(() => vm.agent.close());
  for (const fx of wireFixtures('valid', 'harden_result')) {
    const status = fx.value.status as string;
    if (status === 'hardened' || status === 'already_hardened') {
      vm.answerWith({ status: 'succeeded', output: fx.value });
      const res = await harden(cp, vm.instanceId);
      t.equal(res.status, 200, `${fx.name}: 200 (${fx.description})`);
      t.same({ status: res.body.status, steps: res.body.steps, docker: res.body.docker, placement: res.body.placement }, { status, steps: fx.value.steps, docker: fx.value.docker, placement: fx.value.placement }, `${fx.name}: the answer carries the agent's result`);
    } else {
      vm.answerWith({ status: 'failed', output: fx.value, error: { key: 'sshd_validation_failed', message: 'sshd -t rejected it' } });
      const res = await harden(cp, vm.instanceId);
      t.equal(res.status, 422, `${fx.name}: the agent's own key decides the status (${fx.description})`);
      t.equal(res.body.error, 'sshd_validation_failed', `${fx.name}: sshd_validation_failed`);
      t.same(res.body.detail, fx.value, `${fx.name}: the result is the detail, as sent`);
    }
  }
});

t.test('a harden result the protocol does not allow is refused as command_failed naming the field, and the VM is not marked hardened', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const vm = await hardenAnswering(cp, 'wire-harden-invalid');
  t.teardown(() => vm.agent.close());
  const cases = wireFixtures('invalid', 'harden_result');
  t.ok(cases.length >= 4, `${cases.length} cases`);
  for (const fx of cases) {
    if (fx.expect.ok) throw new Error(`${fx.name} expects ok`);
    vm.answerWith({ status: 'succeeded', output: fx.value });
    const res = await harden(cp, vm.instanceId);
    t.equal(res.status, 502, `${fx.name}: 502 (${fx.description})`);
    t.equal(res.body.error, 'command_failed', `${fx.name}: command_failed`);
    t.match(res.body.message, `harden result the protocol does not allow (${fx.expect.path || 'output'}: `, `${fx.name}: names ${fx.expect.path || 'the output'}`);
  }
  const inst = await cp.api<{ hardened_at: string | null }>('GET', `/api/instances/${vm.instanceId}`);
  t.equal(inst.body.hardened_at, null, 'never marked hardened');
});

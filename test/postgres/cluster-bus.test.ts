/**
 * Two control planes on one PostgreSQL database: process A (its own OS process,
 * `vmkit-control-plane serve`) holds a real vmkit-agent; control plane B (in this test
 * process, so the test can use its command bus the way every REST route does) sends
 * commands that reach the agent through PostgreSQL LISTEN/NOTIFY.
 *
 * The agent dials a TCP relay standing in for one load-balanced URL: it pipes to A,
 * and once A is killed, to B (what a load balancer does when A's health check fails).
 * The agent is given the relay as its one URL (an agent may also list several:
 * test/agent/control-planes.test.ts; nginx in front: test/postgres/cluster-nginx.test.ts).
 */
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import t from 'tap';
import { AgentNotConnectedError } from '../../control-plane/src/hub/errors.ts';
import { commandBusOf } from '../../control-plane/src/hub/plugin.ts';
import { listNodes } from '../../control-plane/src/db/control-planes.ts';
import { listenerApplicationName } from '../../control-plane/src/db/pg-command-router.ts';
import { freePort, eventually, startControlPlaneProcess } from '../helpers/cp-process.ts';
import type { ControlPlaneProcess } from '../helpers/cp-process.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { createTestDatabase, postgresMissing } from '../helpers/postgres.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { enrollRealAgent, plainBashShell, waitAgentState } from '../helpers/real-agent.ts';
import type { AgentControlPlane } from '../helpers/real-agent.ts';
import { parsePromText } from '../helpers/prom-text.ts';

/** One URL in front of the control planes: new connections go to `target`, or wait while held. */
class SwitchRelay {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  #held: Socket[] = [];
  accepted = 0;
  #holding = false;
  port = 0;
  target: number;
  constructor(target: number) {
    this.target = target;
    this.#server = createServer((s) => {
      this.accepted++;
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
      s.on('error', () => s.destroy());
      if (this.#holding) this.#held.push(s);
      else this.#pipe(s);
    });
  }
  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.port = (this.#server.address() as AddressInfo).port;
  }
  /** New connections wait until `release`. */
  hold(): void {
    this.#holding = true;
  }
  /** Held and new connections go to `target` from now on. */
  release(target: number): void {
    this.target = target;
    this.#holding = false;
    for (const s of this.#held.splice(0)) if (!s.destroyed) this.#pipe(s);
  }
  get heldCount(): number {
    return this.#held.filter((s) => !s.destroyed).length;
  }
  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
  #pipe(s: Socket): void {
    const up = connect(this.target, '127.0.0.1');
    this.#sockets.add(up);
    up.on('close', () => {
      this.#sockets.delete(up);
      s.destroy();
    });
    up.on('error', () => up.destroy());
    s.on('close', () => up.destroy());
    s.pipe(up).pipe(s);
  }
}

/** The metric `name` (labelled with A's node id) from A's /metrics. */
async function metricOf(cp: ControlPlaneProcess, name: string): Promise<number | undefined> {
  const res = await cp.api<string>('GET', '/metrics');
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  const parsed = parsePromText(String(res.body));
  return parsed.value(name, { dialect: 'postgres', node_id: 'node-a' });
}

if (fileNeeds(postgresMissing())) {
  t.test('two control planes on one PostgreSQL: commands reach the agent wherever it is connected', async (t) => {
    const pgdb = await createTestDatabase();
    t.teardown(() => pgdb.drop());
    const dirA = mkdtempSync(join(tmpdir(), 'vmkit-cluster-a-'));
    const dirB = mkdtempSync(join(tmpdir(), 'vmkit-cluster-b-'));
    t.teardown(() => {
      rmSync(dirA, { recursive: true, force: true });
      rmSync(dirB, { recursive: true, force: true });
    });
    const env = {
      VMKIT_DATABASE_URL: pgdb.url,
      VMKIT_NODE_ID: 'node-a',
      // A's heartbeat is frequent so that its death is noticed within this test.
      VMKIT_NODE_HEARTBEAT_MS: '300',
    };
    const portA = await freePort();
    const a = await startControlPlaneProcess({ dataDir: dirA, port: portA, env });
    t.teardown(async () => {
      a.kill('SIGKILL');
      await a.exited;
    });
    // One fleet: B gets A's secret-box key (which opens the signing key ring both share in the
    // database) and the operator's admin key, as an operator would deploy them.
    for (const f of ['secret-box.key', 'admin.key']) if (existsSync(join(dirA, f))) copyFileSync(join(dirA, f), join(dirB, f));
    const b: TestControlPlane = await startTestControlPlane({
      dataDir: dirB,
      config: { databaseUrl: pgdb.url, nodeId: 'node-b', agentHub: { nodeHeartbeatMs: 300, nodeStaleAfterMs: 1_500 } },
    });
    t.teardown(() => b.close());
    const busB = commandBusOf(b.ctx);

    const nodes = await listNodes(b.ctx.db);
    t.same(
      nodes.map((n) => n.nodeId),
      ['node-a', 'node-b'],
      'both processes registered in control_planes',
    );
    t.equal(nodes.find((n) => n.nodeId === 'node-a')?.url, a.url, "A's row names the URL it serves on");

    const relay = new SwitchRelay(portA);
    await relay.start();
    t.teardown(() => relay.close());
    const viaRelay: AgentControlPlane = {
      url: `http://127.0.0.1:${relay.port}`,
      api: async (method, path, o) => a.api(method, path, o?.body),
    };
    const agent = await enrollRealAgent(t, viaRelay);
    // Enrollment writes the URL A serves on; the agent dials the relay instead (its one load-balanced URL).
    agent.patchConfig({
      connect_url: `ws://127.0.0.1:${relay.port}/agent/v1/connect`,
      shell: { default_user: 'root', allow_root: true, program: plainBashShell() },
    });
    const proc = agent.start();
    await waitAgentState(viaRelay, agent.instanceId, 'connected');
    t.ok(relay.accepted > 0, 'the agent dialled through the relay');
    const admin = new pg.Client({ connectionString: pgdb.url });
    await admin.connect();
    t.teardown(() => admin.end());
    const holder = async () =>
      (await admin.query<{ node_id: string | null; state: string }>('SELECT node_id, state FROM agents WHERE id = $1', [agent.agentId])).rows[0];
    t.same(await holder(), { node_id: 'node-a', state: 'connected' }, 'the agents row names A as the holder');

    t.test('a command sent through B reaches the agent on A, and B gets the result', async (t) => {
      const out = await busB.send(agent.agentId, 'ping', {}, { requireConnected: true, timeoutMs: 60_000 });
      t.equal(out.output.pong, true, "the agent's answer came back to B");
      t.equal(proc.lines(new RegExp(`executing command.*${out.commandId}`)).length, 1, 'the agent ran it once');
      const facts = await busB.send(agent.agentId, 'facts', {}, { requireConnected: true, timeoutMs: 60_000 });
      t.type(facts.output.hostname, 'string', 'a second command type, same route');
    });

    t.test('an agent connected nowhere: agent_not_connected at once through B', async (t) => {
      const idle = await enrollRealAgent(t, viaRelay);
      const err = await busB.send(idle.agentId, 'ping', {}, { requireConnected: true, timeoutMs: 60_000 }).catch((e: unknown) => e);
      t.type(err, AgentNotConnectedError);
      t.equal((err as AgentNotConnectedError).key, 'agent_not_connected');
      const rest = await b.api<{ error: string }>('POST', `/api/instances/${idle.instanceId}/harden`, { body: {} });
      t.equal(rest.status, 409);
      t.equal(rest.body.error, 'agent_not_connected', 'the REST API of B answers the same key');
    });

    t.test("A's LISTEN connection killed: it notices, listens again, and commands are still delivered", async (t) => {
      const before = (await metricOf(a, 'vmkit_db_notify_reconnects_total')) ?? 0;
      t.equal(await metricOf(a, 'vmkit_db_notify_listening'), 1, 'A is listening');
      const killed = await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [
        listenerApplicationName('node-a'),
      ]);
      t.equal(killed.rowCount, 1, "A's LISTEN connection was found and terminated");
      // Sent at once: A may be between connections, and then reads it from the table after it listens again.
      const during = busB.send(agent.agentId, 'ping', {}, { requireConnected: true, timeoutMs: 60_000 });
      t.equal((await during).output.pong, true, 'the command sent while A re-listened was delivered');
      await a.waitForLog((l) => l.msg === 'bus: listening again; re-reading what may have been missed');
      t.equal(await metricOf(a, 'vmkit_db_notify_reconnects_total'), before + 1, 'A counted the reconnect');
      t.equal(await metricOf(a, 'vmkit_db_notify_listening'), 1, 'A is listening again');
      const after = await busB.send(agent.agentId, 'ping', {}, { requireConnected: true, timeoutMs: 60_000 });
      t.equal(after.output.pong, true, 'a command sent after the reconnect was delivered');
      const ready = await fetch(`${a.url}/readyz`);
      t.equal(ready.status, 200, 'A is ready again');
    });

    t.test('A killed with SIGKILL: the agent reconnects to B and commands follow it, each run once', async (t) => {
      relay.hold();
      a.kill('SIGKILL');
      await a.exited;
      // A's heartbeat is not stale yet: B takes the command and queues it for the agent.
      const gap = busB.send(agent.agentId, 'ping', {}, { requireConnected: true, timeoutMs: 120_000 });
      gap.catch(() => undefined); // awaited below; a failure before that is reported there, not as unhandled
      const gapId = await eventually('the gap command stored', async () => {
        const r = await admin.query<{ id: string }>("SELECT id FROM commands WHERE agent_id = $1 AND state = 'queued'", [agent.agentId]);
        return r.rows[0]?.id;
      });
      // Once A's heartbeat is stale, B's heartbeat marks A's agents disconnected.
      await eventually("A's agents marked disconnected", async () => ((await holder())?.state === 'disconnected' ? true : undefined));
      const refused = await busB.send(agent.agentId, 'ping', {}, { requireConnected: true, timeoutMs: 60_000 }).catch((e: unknown) => e);
      t.type(refused, AgentNotConnectedError, 'with A dead and the agent not yet back, requireConnected fails with agent_not_connected');
      await eventually('the agent redialled', () => (relay.heldCount > 0 ? true : undefined)).catch((err: unknown) => {
        throw new Error(`${String(err)}\nagent log:\n${proc.stderr.slice(-3000)}`);
      });
      relay.release(Number(new URL(b.url).port));
      const out = await gap;
      t.equal(out.commandId, gapId);
      t.equal(out.output.pong, true, 'the command sent during the gap ran after the reconnect');
      t.same(await holder(), { node_id: 'node-b', state: 'connected' }, 'the agents row names B now');
      const next = await busB.send(agent.agentId, 'ping', {}, { requireConnected: true, timeoutMs: 60_000 });
      t.equal(next.output.pong, true, 'a command after the reconnect');
      for (const id of [gapId, next.commandId]) {
        t.equal(proc.lines(new RegExp(`executing command.*${id}`)).length, 1, `command ${id} ran once`);
      }
      const states = await admin.query<{ state: string }>('SELECT state FROM commands WHERE id = $1', [gapId]);
      t.equal(states.rows[0]?.state, 'succeeded');
      await eventually("A's row is gone once stale", async () => ((await listNodes(b.ctx.db)).some((n) => n.nodeId === 'node-a') ? undefined : true));
    });
  });
}

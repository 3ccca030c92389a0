/**
 * Three control-plane processes (`vmkit-control-plane serve`) on one PostgreSQL
 * database behind Debian's nginx, as in production: round-robin, WebSocket upgrade
 * passed through, TLS terminated by nginx with a certificate from a throwaway CA the
 * test makes. A real vmkit-agent enrolls through the load-balanced https:// URL,
 * trusting that CA through --ca-file, and dials wss://.
 *
 * The command sent through REST is agent.update for a release every process serves (a
 * small file): the agent checks the URL against its control plane (the https:// URL it
 * enrolled with), then refuses because it does not run from an installed release, so
 * the round trip completes without changing this machine.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { getCACertificates, setDefaultCACertificates } from 'node:tls';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import t from 'tap';
import type { Test } from 'tap';
import { eventually, freePort } from '../helpers/cp-process.ts';
import { textOf } from '../helpers/mcp-client.ts';
import { lbApi, nginxMissing, startNginxFleet } from '../helpers/nginx.ts';
import { createTestDatabase, postgresMissing } from '../helpers/postgres.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { enrollRealAgent } from '../helpers/real-agent.ts';
import type { AgentControlPlane } from '../helpers/real-agent.ts';
import { makeTestCa, opensslMissing } from '../helpers/test-ca.ts';

t.setTimeout(600_000);

if (fileNeeds(postgresMissing() || nginxMissing() || (await opensslMissing()))) {
  t.test('three control planes behind nginx with TLS: an agent on wss://, commands routed, a process killed', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-cluster-nginx-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const ca = await makeTestCa(dir);
    const pgdb = await createTestDatabase();
    t.teardown(() => pgdb.drop());

    // One fleet: one secret-box key file, one release folder, one public URL (nginx's).
    const secretKeyFile = join(dir, 'secret-box.key');
    writeFileSync(secretKeyFile, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
    const releases = join(dir, 'releases');
    const releaseBytes = randomBytes(4096);
    mkdirSync(join(releases, '9.9.9', 'linux-x64'), { recursive: true });
    writeFileSync(join(releases, '9.9.9', 'linux-x64', 'vmkit-agent'), releaseBytes, { mode: 0o755 });
    const lbPort = await freePort();
    const publicUrl = `https://127.0.0.1:${lbPort}`;
    const rateLimitMax = 60;
    const env = (nodeId: string) => ({
      VMKIT_DATABASE_URL: pgdb.url,
      VMKIT_NODE_ID: nodeId,
      VMKIT_SECRET_KEY_FILE: secretKeyFile,
      VMKIT_PUBLIC_URL: publicUrl,
      VMKIT_TRUST_PROXY: '127.0.0.1',
      VMKIT_AGENT_RELEASES_DIR: releases,
      // A long window: every request of this test falls in one, however slow the machine.
      VMKIT_RATE_LIMIT_MAX: String(rateLimitMax),
      VMKIT_RATE_LIMIT_WINDOW_MS: '600000',
      // A dead process is noticed within this test.
      VMKIT_NODE_HEARTBEAT_MS: '300',
      // No operator shells here: three processes need no SSH gateway port each.
      VMKIT_SSH_GATEWAY_PORT: '0',
    });
    const nodeIds = ['lb-1', 'lb-2', 'lb-3'];
    const { procs, ports, adminKey, lb } = await startNginxFleet(t, { dir, nodeIds, env, lbPort, certFile: ca.certFile, keyFile: ca.keyFile });
    const caPem = readFileSync(ca.caFile, 'utf8');
    const api = lbApi(lb.url, caPem, adminKey);
    const upstreamOf = (tag: string): string[] => lb.accessLog().filter((l) => l.tag === tag).map((l) => l.upstream);
    // nginx writes a request's line just after the response went out: wait for it.
    const loggedUpstreams = (tag: string, count = 1) => eventually(`nginx logged ${count} ${tag} request(s)`, () => {
      const seen = upstreamOf(tag);
      return seen.length >= count ? seen : undefined;
    });
    const portOfNode = (nodeId: string) => ports[nodeIds.indexOf(nodeId)];

    const admin = new pg.Client({ connectionString: pgdb.url });
    await admin.connect();
    t.teardown(() => admin.end());
    const holder = async (agentId: string) =>
      (await admin.query<{ node_id: string | null; state: string }>('SELECT node_id, state FROM agents WHERE id = $1', [agentId])).rows[0];
    const commandRow = async (id: string) =>
      (await admin.query<{ state: string; error_key: string | null; result: { error?: { key: string; message: string } } | null }>('SELECT state, error_key, result FROM commands WHERE id = $1', [id])).rows[0];
    /** The command once it ended, with its error key (the column, or the agent's result). */
    const finished = (id: string) =>
      eventually(`command ${id} finished`, async () => {
        const row = await commandRow(id);
        if (!row || !['succeeded', 'failed', 'expired', 'timed_out'].includes(row.state)) return undefined;
        return { state: row.state, key: row.error_key ?? row.result?.error?.key ?? null, message: row.result?.error?.message ?? '' };
      });

    t.test('requests through nginx are spread over the three processes and share one rate-limit budget', async (t) => {
      const key = (await api<{ secret: string }>('POST', '/api/keys', { body: { name: 'spread', scopes: ['repos:read'] } })).body.secret;
      t.type(key, 'string', 'a key made through the load balancer');
      const statuses: number[] = [];
      for (let i = 0; i < rateLimitMax; i++) statuses.push((await api('GET', '/api/repos', { key, tag: 'budget' })).status);
      t.same(statuses, Array(rateLimitMax).fill(200), `${rateLimitMax} requests fit the budget of ${rateLimitMax}`);
      const served = new Set(await loggedUpstreams('budget', rateLimitMax));
      t.same([...served].sort(), ports.map((p) => `127.0.0.1:${p}`).sort(), 'round-robin: each process served some of them');
      const over = await api<{ error: string }>('GET', '/api/repos', { key, tag: 'over' });
      t.equal(over.status, 429, 'the next one is refused, whichever process it reached');
      t.equal(over.body.error, 'rate_limited');
    });

    const agent = await enrollRealAgent(t, { url: lb.url, api } satisfies AgentControlPlane, { enrollArgs: ['--ca-file', ca.caFile] });
    const config = agent.config();
    t.equal(config.connect_url, `wss://127.0.0.1:${lbPort}/agent/v1/connect`, 'enrollment through nginx announced wss:// at the public URL');
    t.equal(config.control_plane_url, `${publicUrl}/`);
    t.equal(config.ca_file, ca.caFile, 'the agent trusts the throwaway CA through its config');
    const proc = agent.start();
    const connectedOn = await eventually('the agent connected through nginx', async () => {
      const h = await holder(agent.agentId);
      return h?.state === 'connected' && h.node_id !== null ? h.node_id : undefined;
    });
    t.ok(nodeIds.includes(connectedOn), `the agent is held by ${connectedOn}`);
    await proc.waitForLog(new RegExp(`^info connected .*"url":"wss://127\\.0\\.0\\.1:${lbPort}/agent/v1/connect"`));
    t.notOk(config.connect_urls, 'one URL only: every reconnect goes through nginx');
    const wssConnects = () => proc.lines(/^info connected .*"url":"wss:/).length;

    /** Sends agent.update through nginx until it lands on a process other than `not` (round-robin: within three). */
    const updateElsewhere = async (t: Test, not: string, tag: string) => {
      for (let i = 0; i < 6; i++) {
        const res = await api<{ command_id: string }>('POST', `/api/instances/${agent.instanceId}/agent-update`, { body: { version: '9.9.9' }, tag: `${tag}-${i}` });
        t.equal(res.status, 202, `agent.update accepted: ${JSON.stringify(res.body)}`);
        const via = (await loggedUpstreams(`${tag}-${i}`))[0] ?? '';
        if (via !== `127.0.0.1:${portOfNode(not)}`) return { commandId: res.body.command_id, via };
        // It landed on the holder: let it finish, then send again (the next goes to another process).
        await finished(res.body.command_id);
      }
      throw new Error('six requests in a row went to the same process: nginx is not round-robin');
    };

    t.test('a REST command through nginx lands on a process that does not hold the agent, and completes', async (t) => {
      const { commandId, via } = await updateElsewhere(t, connectedOn, 'update');
      const others = ports.filter((p) => p !== portOfNode(connectedOn)).map((p) => `127.0.0.1:${p}`);
      t.ok(others.includes(via), `sent through ${via}, a process other than ${connectedOn} (127.0.0.1:${portOfNode(connectedOn)}) that holds the agent`);
      const row = await finished(commandId);
      t.equal(row.state, 'failed', 'the agent answered');
      t.equal(row.key, 'update_refused');
      t.match(row.message, /this agent cannot update itself/, `the release URL under ${publicUrl} passed the agent's check; it refused only because it is not installed as a release`);
      t.equal(proc.lines(new RegExp(`executing command.*${commandId}`)).length, 1, 'it ran once');
    });

    t.test('an MCP session through nginx: its requests land on several processes and every one is answered', async (t) => {
      // The SDK client's fetch trusts the throwaway CA (process-wide, in this test process only).
      setDefaultCACertificates([...getCACertificates('default'), caPem]);
      const client = new Client({ name: 'vmkit-test', version: '0.0.0' });
      const headers = { authorization: `Bearer ${adminKey}`, 'x-test-tag': 'mcp' };
      await client.connect(new StreamableHTTPClientTransport(new URL('/mcp', lb.url), { requestInit: { headers } }));
      t.teardown(() => client.close());
      const tools = await client.listTools();
      t.ok(tools.tools.some((tool) => tool.name === 'harden_vm'), 'tools/list answered');
      for (let i = 0; i < 4; i++) {
        const res = await client.callTool({ name: 'get_instance', arguments: { instance_id: agent.instanceId } });
        t.notOk(res.isError, `get_instance answered (call ${i + 1}): ${textOf(res).slice(0, 200)}`);
        t.match(textOf(res), new RegExp(agent.instanceId), 'about the agent\'s instance');
      }
      // initialize, initialized, tools/list, 4 calls: 7 requests on one session, round-robin.
      const served = new Set(await loggedUpstreams('mcp', 7));
      t.ok(served.size >= 2, `the session's requests reached ${served.size} processes (${[...served].join(', ')}): the others forwarded to its holder`);
      t.ok(lb.accessLog().filter((l) => l.tag === 'mcp').every((l) => l.status < 400 || l.status === 405), 'none was refused');
    });

    t.test('the holding process SIGKILLed: the agent reconnects through nginx to another, a command sent in the gap runs at most once', async (t) => {
      const victim = procs[nodeIds.indexOf(connectedOn)];
      if (!victim) throw new Error('no process for the holder');
      const connectsBefore = wssConnects();
      victim.kill('SIGKILL');
      await victim.exited;
      // Sent at once: the agent is reconnecting, the database may still name the dead holder.
      const gap = await api<{ command_id?: string; error?: string; message?: string }>('POST', `/api/instances/${agent.instanceId}/agent-update`, { body: { version: '9.9.9' }, tag: 'gap' });
      const newHolder = await eventually('the agent connected to another process', async () => {
        const h = await holder(agent.agentId);
        return h?.state === 'connected' && h.node_id !== null && h.node_id !== connectedOn ? h.node_id : undefined;
      });
      t.not(newHolder, connectedOn, `the agent is on ${newHolder} now`);
      // The holder writes the agent's row before the agent has the welcome and logs it: wait for the log line.
      await eventually('the agent logged its reconnect', () => (wssConnects() > connectsBefore ? true : undefined));
      t.ok(wssConnects() > connectsBefore, 'it connected again on its one wss:// URL, nginx');
      if (gap.status === 202 && gap.body.command_id) {
        const row = await finished(gap.body.command_id);
        const ran = proc.lines(new RegExp(`executing command.*${gap.body.command_id}`)).length;
        t.ok(ran <= 1, `the gap command ran at most once (${ran})`);
        if (row.key === 'update_refused') t.equal(ran, 1, 'it completed after the reconnect: the agent ran it once');
        else t.ok(row.key !== null, `it ended with a clear key: ${row.state} ${row.key ?? ''}`);
      } else {
        t.equal(gap.status, 409, `refused at once: ${JSON.stringify(gap.body)}`);
        t.equal(gap.body.error, 'agent_not_connected', 'with a clear key');
      }
      // And commands follow the agent to its new process.
      const { commandId } = await updateElsewhere(t, newHolder, 'after');
      const row = await finished(commandId);
      t.equal(row.key, 'update_refused', 'a command after the reconnect reaches the agent');
      t.equal(proc.lines(new RegExp(`executing command.*${commandId}`)).length, 1, 'once');
      t.match(lb.errorLog(), /connect\(\) failed \(111: Connection refused\) while connecting to upstream/, 'nginx saw the dead process and moved on');
    });
  });
}

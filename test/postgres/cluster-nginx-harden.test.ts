/**
 * Issue #15: three control-plane processes (`vmkit-control-plane serve`) on one
 * PostgreSQL database behind Debian's nginx (round-robin, TLS from a throwaway CA), and
 * a real VM: a local sandbox with sshd allowing root and passwords, whose real
 * vmkit-agent enrolled through nginx's https:// URL trusting the CA and dials wss://.
 * The provider relays nginx's loopback port into the sandbox, so the agent sees the very
 * URL (and certificate name, 127.0.0.1) the control planes announce.
 *
 * The agent is held by process A. A REST harden through nginx lands on B (not A) and
 * really hardens the VM; then an MCP session opened on C calls harden_vm, answered by C,
 * and gets the idempotent answer. One harden command ran per call, both are audited.
 * (already_hardened from C needs every process to use the workspace's one deploy key:
 * on PostgreSQL the pairs are rows of deploy_keys, not files of each data dir.)
 *
 * Which process serves a request is steered without guessing: nginx's round-robin over
 * equal servers is a fixed cycle in the order of its upstream block, so after a cheap
 * tagged probe is logged as served by X, the next request goes to the server after X.
 * The access log then confirms where each request went.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getCACertificates, setDefaultCACertificates } from 'node:tls';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import pg from 'pg';
import t from 'tap';
import { eventually, freePort } from '../helpers/cp-process.ts';
import { textOf } from '../helpers/mcp-client.ts';
import { lbApi, nginxMissing, startNginxFleet } from '../helpers/nginx.ts';
import { createTestDatabase, postgresMissing } from '../helpers/postgres.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { sandboxSkipReason, sshRun, startSandbox } from '../helpers/sandbox.ts';
import { makeTestCa, opensslMissing } from '../helpers/test-ca.ts';
import type { HardenBody } from '../helpers/harden-body.ts';

t.setTimeout(300_000);

const ROOT_PASSWORD = 'fresh-cloud-vm-password';

interface CommandView {
  state: string;
  result: Record<string, unknown> | null;
  error: { error: string; message: string } | null;
}

if (fileNeeds(sandboxSkipReason || postgresMissing() || nginxMissing() || (await opensslMissing()))) {
  t.test('three control planes behind nginx harden a real VM: REST lands on B, MCP on C, the agent is on A', async (t) => {
    // On the host's /tmp: the sandbox sees it as the lower layer of its own /tmp.
    const dir = mkdtempSync(join(tmpdir(), 'vmkit-cluster-nginx-harden-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const ca = await makeTestCa(dir);
    const caPem = readFileSync(ca.caFile, 'utf8');
    const pgdb = await createTestDatabase();
    t.teardown(() => pgdb.drop());

    const secretKeyFile = join(dir, 'secret-box.key');
    writeFileSync(secretKeyFile, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
    const lbPort = await freePort();
    const env = (nodeId: string) => ({
      VMKIT_DATABASE_URL: pgdb.url,
      VMKIT_NODE_ID: nodeId,
      VMKIT_SECRET_KEY_FILE: secretKeyFile,
      VMKIT_PUBLIC_URL: `https://127.0.0.1:${lbPort}`,
      VMKIT_TRUST_PROXY: '127.0.0.1',
      VMKIT_SSH_GATEWAY_PORT: '0',
    });
    const nodeIds = ['hd-1', 'hd-2', 'hd-3'];
    const { ports, adminKey, lb } = await startNginxFleet(t, { dir, nodeIds, env, lbPort, certFile: ca.certFile, keyFile: ca.keyFile });
    const api = lbApi(lb.url, caPem, adminKey);
    const addr = (nodeId: string) => `127.0.0.1:${ports[nodeIds.indexOf(nodeId)] ?? 0}`;
    const nodeAt = (upstream: string) => nodeIds[ports.findIndex((p) => `127.0.0.1:${p}` === upstream)] ?? `unknown upstream ${upstream}`;
    /** Where nginx sent the request tagged `tag` (its line is written just after the response went out). */
    const servedBy = (tag: string) =>
      eventually(`nginx logged the ${tag} request`, () => {
        const line = lb.accessLog().find((l) => l.tag === tag);
        return line === undefined ? undefined : nodeAt(line.upstream);
      });
    let probes = 0;
    /** Cheap tagged requests until the next one nginx receives goes to `target`. */
    const steerTo = async (target: string): Promise<void> => {
      for (let i = 0; i < 4; i++) {
        const tag = `probe-${++probes}`;
        const res = await api('GET', '/api/instances', { tag });
        if (res.status !== 200) throw new Error(`probe ${tag}: ${res.status} ${JSON.stringify(res.body)}`);
        const by = await servedBy(tag);
        if (nodeIds[(nodeIds.indexOf(by) + 1) % nodeIds.length] === target) return;
      }
      throw new Error(`four probes and nginx's next server is still not ${target}: not the round-robin this test relies on`);
    };

    const admin = new pg.Client({ connectionString: pgdb.url });
    await admin.connect();
    t.teardown(() => admin.end());

    // The VM: an instance and a token made through nginx, the agent enrolled at nginx's https:// URL.
    const inst = await api<{ id: string }>('POST', '/api/instances', { body: { name: 'nginx-harden' } });
    t.equal(inst.status, 201, JSON.stringify(inst.body));
    const instanceId = inst.body.id;
    const tok = await api<{ token: string }>('POST', `/api/instances/${instanceId}/enrollment-token`);
    t.equal(tok.status, 201, JSON.stringify(tok.body));
    const sb = await startSandbox(t, {
      instanceId,
      name: 'nginx-harden',
      rootPassword: ROOT_PASSWORD,
      enrollment: { control_plane_url: lb.url, token: tok.body.token, ca_pem: caPem },
    });
    const programLog = () => (existsSync(join(sb.vm.dir, 'program.log')) ? readFileSync(join(sb.vm.dir, 'program.log'), 'utf8') : '');
    // What a cloud provider records: the VM's SSH address (the outside check dials it).
    await admin.query("UPDATE instances SET ssh_host = $1, ssh_port = 22, status = 'running' WHERE id = $2", [sb.vm.address, instanceId]);
    const agentRow = await eventually(
      'the sandbox agent connected through nginx',
      async () => {
        const r = await admin.query<{ id: string; node_id: string | null; state: string }>('SELECT id, node_id, state FROM agents WHERE instance_id = $1', [instanceId]);
        const row = r.rows[0];
        return row?.state === 'connected' && row.node_id !== null ? { id: row.id, nodeId: row.node_id } : undefined;
      },
      120_000,
      250,
    ).catch((err: unknown) => {
      t.comment(`program.log:\n${programLog().slice(-3000)}`);
      throw err;
    });
    const config = JSON.parse((await sb.exec(['cat', '/etc/vmkit/agent.json'])).stdout) as { connect_url: string; ca_file?: string };
    t.equal(config.connect_url, `wss://127.0.0.1:${lbPort}/agent/v1/connect`, "the agent dials nginx's wss:// URL");
    t.equal(config.ca_file, join(sb.vm.dir, 'ca.pem'), 'trusting the test CA');
    const holder = agentRow.nodeId;
    t.ok(nodeIds.includes(holder), `the agent is held by ${holder}`);
    const before = await sshRun({ host: sb.vm.address, password: ROOT_PASSWORD }, 'id -un');
    t.equal(before.stdout.trim(), 'root', 'a fresh VM: root logs in with a password');

    const hardenIds: string[] = [];

    // B: the process nginx serves after the holder. The REST harden is sent only once the
    // next request is known to go there, so no harden lands on the holder on the way.
    const b = nodeIds[(nodeIds.indexOf(holder) + 1) % nodeIds.length] ?? '';
    const c = nodeIds.find((n) => n !== holder && n !== b) ?? '';

    await t.test(`REST harden through nginx lands on ${b}, not on ${holder} that holds the agent, and hardens the VM`, async (t) => {
      await steerTo(b);
      const res = await api<HardenBody>('POST', `/api/instances/${instanceId}/harden`, { body: { wait_ms: 50_000 }, tag: 'harden-rest' });
      t.equal(await servedBy('harden-rest'), b, `nginx sent the harden to ${b} (${addr(b)})`);
      t.not(b, holder, 'B is not the holder');
      let body = res.body;
      if (res.status === 202) {
        // Not done within wait_ms on a slow machine: poll the command through nginx.
        const view = await eventually(
          'the harden command ended',
          async () => {
            const r = await api<CommandView>('GET', `/api/commands/${res.body.command_id}?wait_ms=10000`);
            return ['succeeded', 'failed', 'expired', 'timed_out'].includes(r.body.state) ? r.body : undefined;
          },
          180_000,
        );
        t.equal(view.state, 'succeeded', JSON.stringify(view));
        body = { ...(view.result as unknown as HardenBody), command_id: res.body.command_id };
      } else {
        t.equal(res.status, 200, JSON.stringify(res.body));
      }
      t.equal(body.status, 'hardened', 'the VM was hardened');
      t.equal(body.instance_id, instanceId);
      t.ok((body.steps ?? []).some((s) => s.changed), 'some step changed the VM');
      t.equal(body.verification?.ok, true, `verified from outside over SSH: ${JSON.stringify(body.verification)}`);
      hardenIds.push(body.command_id);

      // On the VM itself.
      const kamal = await sb.exec(['id', 'kamal']);
      t.equal(kamal.code, 0, 'the kamal user exists');
      t.match(kamal.stdout, /\(docker\)/, 'in the docker group');
      const effective = (await sb.exec(['sshd', '-T'])).stdout;
      t.match(effective, /^permitrootlogin no$/m, "sshd's effective config refuses root");
      t.match(effective, /^passwordauthentication no$/m, 'and passwords');
      await t.rejects(sshRun({ host: sb.vm.address, password: ROOT_PASSWORD }, 'true'), /authentication methods failed/i, 'root with its password is refused over SSH');
    });

    await t.test(`MCP harden_vm through nginx runs on ${c}, neither the holder nor the REST process, and answers already_hardened`, async (t) => {
      // The SDK client's fetch trusts the throwaway CA (process-wide, in this test process only).
      setDefaultCACertificates([...getCACertificates('default'), caPem]);
      // Every POST of the session gets a tag of its own (its JSON-RPC method), so the access
      // log tells where each went. No standalone GET stream: a long-lived request would
      // take a round-robin turn and show in the log only when it ends.
      let sent = 0;
      const tags: string[] = [];
      const taggedFetch = async (url: string | URL, init?: RequestInit): Promise<Response> => {
        if ((init?.method ?? 'GET') === 'GET') return new Response(null, { status: 405 });
        const body = typeof init?.body === 'string' ? (JSON.parse(init.body) as { method?: string }) : {};
        const tag = `mcp-${++sent}-${body.method ?? init?.method ?? 'request'}`;
        tags.push(tag);
        const headers = new Headers(init?.headers);
        headers.set('x-test-tag', tag);
        return fetch(url, { ...init, headers });
      };
      const client = new Client({ name: 'vmkit-test', version: '0.0.0' });
      const transport = new StreamableHTTPClientTransport(new URL('/mcp', lb.url), {
        requestInit: { headers: { authorization: `Bearer ${adminKey}` } },
        fetch: taggedFetch,
      });
      // The session lives on the process that answered initialize: make that C.
      await steerTo(c);
      await client.connect(transport);
      t.teardown(() => client.close());
      const init = tags.find((x) => x.endsWith('-initialize')) ?? '';
      t.equal(await servedBy(init), c, `the session was opened on ${c}`);
      const session = await admin.query<{ node_id: string }>('SELECT node_id FROM mcp_sessions WHERE session_id = $1', [transport.sessionId ?? '']);
      t.equal(session.rows[0]?.node_id, c, `mcp_sessions names ${c} as its holder`);
      for (const x of tags) await servedBy(x);

      // And the tools/call itself is served by C too (no relay between processes).
      await steerTo(c);
      const res = await client.callTool({ name: 'harden_vm', arguments: { instance_id: instanceId } });
      const call = tags.at(-1) ?? '';
      t.match(call, /-tools\/call$/, 'the last request was the tool call');
      t.equal(await servedBy(call), c, `nginx sent harden_vm to ${c} (${addr(c)})`);
      t.notOk(res.isError, textOf(res));
      const out = res.structuredContent as { status?: string; instance_id?: string; command_id?: string; steps?: Array<{ changed: boolean }>; verification?: { ok: boolean | null } };
      // The contract's fields: status ("hardened" | "already_hardened"), instance_id echoed.
      t.equal(out.status, 'already_hardened', `the VM was hardened already: ${textOf(res).slice(0, 500)}`);
      t.equal(out.instance_id, instanceId, 'instance_id is the input echoed');
      t.notOk((out.steps ?? []).some((s) => s.changed), 'no step changed anything');
      t.equal(out.verification?.ok, true, `verified from outside by ${c}: ${JSON.stringify(out.verification)}`);
      t.type(out.command_id, 'string');
      hardenIds.push(out.command_id ?? '');
    });

    await t.test('one harden command ran on the agent per call, and both calls are audited', async (t) => {
      const cmds = await admin.query<{ id: string; state: string }>("SELECT id, state FROM commands WHERE agent_id = $1 AND type = 'harden' ORDER BY created_at", [agentRow.id]);
      t.same(cmds.rows.map((r) => r.id), hardenIds, 'two harden commands, one per call');
      t.same(cmds.rows.map((r) => r.state), ['succeeded', 'succeeded']);
      const executed = programLog().split('\n').filter((l) => /executing command/.test(l) && /"type":"harden"/.test(l));
      t.equal(executed.length, 2, `the agent executed two harden commands:\n${executed.join('\n')}`);
      for (const id of hardenIds) t.equal(executed.filter((l) => l.includes(id)).length, 1, `${id} executed once`);

      const audit = await admin.query<{ channel: string; tool: string | null; action: string; status: number; target_ids: Record<string, string> | null }>(
        "SELECT channel, tool, action, status, target_ids FROM audit_log WHERE action LIKE 'instances.harden%' OR tool = 'harden_vm' ORDER BY id",
      );
      const requests = audit.rows.filter((r) => r.action === 'instances.harden');
      t.same(
        requests.map((r) => ({ channel: r.channel, tool: r.tool, id: r.target_ids?.id })),
        [
          { channel: 'rest', tool: null, id: instanceId },
          { channel: 'mcp', tool: 'harden_vm', id: instanceId },
        ],
        `one request row per call, REST then MCP: ${JSON.stringify(requests)}`,
      );
      t.equal(requests[0]?.status, 200, 'the REST call answered with the result');
      // harden_vm asks with wait_ms 0 and follows the command (commands.get rows under the tool).
      t.equal(requests[1]?.status, 202, 'the MCP call started the command');
      t.ok(audit.rows.some((r) => r.channel === 'mcp' && r.tool === 'harden_vm' && r.action === 'commands.get' && r.target_ids?.id === hardenIds[1]), 'and its polls are audited under the tool');
      const completed = audit.rows.filter((r) => r.action === 'instances.harden.completed');
      t.same(completed.map((r) => r.target_ids?.command_id).sort(), [...hardenIds].sort(), 'each command has one completed row');
      t.ok(completed.every((r) => r.status === 200 && r.channel === 'agent'), 'both completed with 200');
    });
  });
}

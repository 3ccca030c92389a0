/**
 * Operator shells across two control planes on one PostgreSQL database. A real
 * vmkit-agent is connected to A; the operator reaches B (what a load balancer may do).
 * B relays the PTY channel to A over the signed internal WebSocket
 * (/internal/shell-relay), while the session (row, audit, recording) stays on B:
 * interactive shells, exec, a large output through a slow reader, refusals with their
 * keys, the SSH gateway, forged relay requests refused, and A closing under a session.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import t from 'tap';
import WebSocket from 'ws';
import { SecretBox } from '../../control-plane/src/auth/secret-box.ts';
import { rawRows, sql } from '../../control-plane/src/db/raw.ts';
import { SHELL_RELAY_KEY_PURPOSE, SHELL_RELAY_PATH, relayHeaders, sha256Hex } from '../../control-plane/src/hub/shell-relay-wire.ts';
import { parseAsciicast } from '../../control-plane/src/shell/recording.ts';
import { shellPath } from '../../control-plane/src/shell/operator-wire.ts';
import { startTestCluster } from '../helpers/cluster.ts';
import { eventually } from '../helpers/cp-process.ts';
import { enrollRealAgent, plainBashShell, waitAgentState } from '../helpers/real-agent.ts';
import { openShell } from '../helpers/shell-client.ts';
import type { TestShell } from '../helpers/shell-client.ts';
import { postgresMissing } from '../helpers/postgres.ts';
import { fileNeeds, prerequisite } from '../helpers/prereq.ts';
import { parsePromText } from '../helpers/prom-text.ts';
import { bytesRead, catPid } from '../helpers/proc.ts';

const MB = 1024 * 1024;
const notRoot = process.getuid?.() === 0 ? false : 'the agent must run shells as root here (tests run as root under CI)';
const noSsh = spawnSync('ssh', ['-V']).error ? 'OpenSSH client (ssh) is not installed' : false;



if (fileNeeds(postgresMissing() || notRoot)) {
  const cluster = await startTestCluster(t, {
    nodes: 2,
    nodeIds: ['node-a', 'node-b'],
    config: {
      agentHub: { heartbeatIntervalMs: 1_000, deadAfterMs: 10_000 },
      shell: { idleTimeoutMs: 20 * 60_000, maxSessionMs: 3_600_000, recordInput: false, requireRecording: true, keyCheckMs: 500 },
    },
    nodeConfig: (i) => (i === 1 ? { sshGateway: { port: 0, host: '127.0.0.1', required: true } } : {}),
  });
  const [a, b] = cluster.nodes as [(typeof cluster.nodes)[0], (typeof cluster.nodes)[0]];
  const relayKey = new SecretBox(Buffer.from(readFileSync(cluster.secretKeyFile, 'utf8').trim(), 'base64')).subkey(SHELL_RELAY_KEY_PURPOSE);

  const dir = mkdtempSync(join(tmpdir(), 'vmkit-cluster-shell-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  const agent = await enrollRealAgent(t, a, { name: 'relayed-vm' });
  agent.patchConfig({ shell: { default_user: 'root', allow_root: true, max_sessions: 16, program: plainBashShell() } });
  agent.start();
  await waitAgentState(a, agent.instanceId, 'connected', 120_000);
  const operator = await b.createKey(['shell'], { name: 'operator' });

  const relayCount = async (node: typeof a, side: string, outcome: string) => {
    const res = await node.api<string>('GET', '/metrics');
    return parsePromText(String(res.body)).value('vmkit_shell_relay_opens_total', { node_id: node.ctx.nodeId, side, outcome }) ?? 0;
  };
  const shellOpens = async () => {
    const rows = await rawRows<{ n: number }>(a.ctx.db, sql`SELECT count(*)::int AS n FROM commands WHERE type = 'shell.open'`);
    return rows[0]?.n ?? 0;
  };
  const shellViaB = async (query: Record<string, string> = {}): Promise<TestShell> => {
    const r = await openShell(b.url, 'relayed-vm', { key: operator.secret, query });
    if ('refused' in r) throw new Error(`refused: ${JSON.stringify(r.refused)}`);
    await r.session.until(() => r.session.opened, 'the opened message');
    return r.session;
  };

  t.test('the agent is held by A only: B must relay', async (t) => {
    t.equal(a.ctx.hub?.isConnected(agent.agentId), true, 'A holds the agent');
    t.equal(b.ctx.hub?.isConnected(agent.agentId), false, 'B does not');
  });

  t.test('an interactive shell through B: output, resize and exit code; the session is B\'s', async (t) => {
    const before = await relayCount(b, 'front', 'opened');
    const servedBefore = await relayCount(a, 'holder', 'opened');
    const s = await shellViaB({ cols: '80', rows: '24' });
    s.type('echo rel""ayed-$((6*7))\r');
    await s.waitFor(/relayed-42/);
    s.type('stty size\r');
    await s.waitFor(/^24 80\r?$/m);
    const mark = s.text.length;
    s.resize(132, 43);
    s.type('stty size\r');
    await s.waitFor(/^43 132\r?$/m, mark);
    s.type('exit 3\r');
    t.match(await s.waitExit(), { type: 'exit', code: 3, reason: 'exit' });
    await s.waitClosed();
    t.equal(await relayCount(b, 'front', 'opened'), before + 1, 'B counted one relayed open');
    t.equal(await relayCount(a, 'holder', 'opened'), servedBefore + 1, 'A counted one open served for another process');

    const id = s.opened?.session_id ?? '';
    const list = await b.api<{ items: { id: string; via: string; exit_code: number | null; end_reason: string | null }[] }>('GET', '/api/shell-sessions?limit=500', {
      key: operator.secret,
    });
    t.match(
      list.body.items.find((x) => x.id === id),
      { via: 'websocket', exit_code: 3, end_reason: 'exit' },
      'the session row is closed with the exit code',
    );
    const cast = await fetch(`${b.url}/api/shell-sessions/${id}/recording`, { headers: { authorization: `Bearer ${operator.secret}` } });
    t.equal(cast.status, 200);
    const parsed = parseAsciicast(await cast.text());
    t.match(parsed.events.filter((e) => e[1] === 'o').map((e) => e[2]).join(''), /relayed-42/, 'B recorded the output');
    t.ok(
      readdirSync(join(b.dataDir, 'recordings')).includes(`${id}.cast`),
      "the recording is in B's data dir",
    );
    const audit = await b.api<{ items: { action: string; target_ids: Record<string, string> | null }[] }>('GET', `/api/audit?key_id=${operator.id}&limit=500`);
    t.same(audit.body.items.filter((x) => x.target_ids?.session_id === id).map((x) => x.action).sort(), ['shell.close', 'shell.open'], 'opening and closing are audited');
  });

  t.test('exec mode through B: a single command, its output and status', async (t) => {
    const s = await shellViaB({ command: 'echo exec-ou""tput; exit 7' });
    const exit = await s.waitExit();
    t.match(s.text, /exec-output/);
    t.match(exit, { code: 7, reason: 'exit' });
  });

  t.test('a large output through a slow reader arrives intact; cat stays within the windows of the reader', async (t) => {
    const FILE_BYTES = 32 * MB;
    const LEAD_BOUND = 16 * MB;
    const file = join(dir, 'big.txt');
    const raw = randomBytes((FILE_BYTES / 100) * 75).toString('base64');
    const lines: string[] = [];
    for (let i = 0; i < FILE_BYTES / 100; i++) lines.push(raw.slice(i * 99, i * 99 + 99));
    const content = `${lines.join('\n')}\n`;
    writeFileSync(file, content, { mode: 0o644 });
    // Through the PTY each \n arrives as \r\n (onlcr).
    const expected = Buffer.from(content.replace(/\n/g, '\r\n'), 'utf8');
    const hash = createHash('sha256');
    let received = 0;
    let maxLead = 0;
    let catSeen = false;
    let cat: number | undefined;
    const sample = () => {
      cat ??= catPid(file);
      if (cat === undefined) return;
      catSeen = true;
      const read = bytesRead(cat);
      if (read !== undefined) maxLead = Math.max(maxLead, read - received);
    };
    const watch = setInterval(sample, 50);
    const exit = await new Promise<{ code: number | null; reason: string }>((resolve, reject) => {
      const u = new URL(b.url + shellPath('relayed-vm'));
      u.protocol = 'ws:';
      u.searchParams.set('command', `cat ${file}`);
      const ws = new WebSocket(u, { headers: { authorization: `Bearer ${operator.secret}` }, perMessageDeflate: false });
      let end: { code: number | null; reason: string } | undefined;
      let sincePause = 0;
      ws.on('message', (data: Buffer, isBinary) => {
        if (!isBinary) {
          const msg = JSON.parse(data.toString('utf8')) as { type: string; code: number | null; reason: string };
          if (msg.type === 'exit') end = msg;
          return;
        }
        received += data.length;
        hash.update(data);
        sincePause += data.length;
        // A reader that pauses after every 512 KB: slower than the relay.
        if (sincePause >= 512 * 1024) {
          sincePause = 0;
          ws.pause();
          setTimeout(() => ws.resume(), 50);
        }
      });
      ws.on('unexpected-response', (_req, res) => reject(new Error(`refused: HTTP ${res.statusCode}`)));
      ws.on('error', reject);
      ws.on('close', () => (end ? resolve(end) : reject(new Error('closed without an exit message'))));
    }).finally(() => clearInterval(watch));
    t.match(exit, { code: 0, reason: 'exit' });
    t.equal(received, expected.length, 'every byte arrived');
    t.equal(hash.digest('hex'), createHash('sha256').update(expected).digest('hex'), 'the bytes are the file (sha256)');
    t.ok(catSeen, 'cat was seen running while the reader lagged');
    t.ok(maxLead < LEAD_BOUND, `cat never ran more than ${LEAD_BOUND / MB} MB ahead of the reader (${(maxLead / MB).toFixed(1)} MB)`);
  });

  t.test("the holder's refusals reach the operator on B with their keys", async (t) => {
    const refusedBefore = await relayCount(b, 'front', 'holder_refused');
    const r = await openShell(b.url, 'relayed-vm', { key: operator.secret, query: { user: 'nosuchuser' } });
    t.ok('refused' in r, 'refused before the upgrade');
    if ('refused' in r) {
      t.equal(r.refused.body.error, 'shell_user_refused');
      t.match(r.refused.body.message, /nosuchuser does not exist/);
    }
    t.equal(await relayCount(b, 'front', 'holder_refused'), refusedBefore + 1, 'B counted the refusal');
    const audit = await b.api<{ items: { error_key: string | null }[] }>('GET', `/api/audit?action=shell.refused&key_id=${operator.id}`);
    t.equal(audit.body.items[0]?.error_key, 'shell_user_refused', 'B audited the refusal');
  });

  t.test('the SSH gateway on B runs a command on the agent A holds', { skip: prerequisite(noSsh) }, async (t) => {
    const gw = b.ctx.sshGateway;
    if (!gw) throw new Error("B's SSH gateway is not listening");
    const knownHosts = join(dir, 'known_hosts');
    writeFileSync(knownHosts, `[127.0.0.1]:${gw.port} ${gw.hostKey.publicKey}\n`);
    const keyFile = join(dir, 'operator-ssh');
    spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', keyFile]);
    const added = await b.api('POST', `/api/keys/${operator.id}/ssh-keys`, { key: operator.secret, body: { public_key: readFileSync(`${keyFile}.pub`, 'utf8') } });
    t.equal(added.status, 201);
    const r = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      const child = spawn(
        'ssh',
        ['-p', String(gw.port), '-i', keyFile, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', `UserKnownHostsFile=${knownHosts}`,
          '-o', 'StrictHostKeyChecking=yes', '-o', 'GlobalKnownHostsFile=/dev/null', '-F', '/dev/null', 'relayed-vm@127.0.0.1', 'echo via-s""sh; exit 5'],
        { stdio: ['pipe', 'pipe', 'pipe'] },
      );
      let out = '';
      let err = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (err += c.toString()));
      child.stdin.end();
      child.on('exit', (code) => resolve({ code, out, err }));
    });
    t.equal(r.code, 5, r.err);
    t.match(r.out, /via-ssh/);
  });

  t.test('requests posing as relays without a valid signature are refused and open nothing', async (t) => {
    const relayUrl = `${a.url.replace(/^http/, 'ws')}${SHELL_RELAY_PATH}`;
    const openMessage = JSON.stringify({ type: 'open', request: { agentId: agent.agentId, cols: 80, rows: 24, term: 'xterm', command: 'echo forged-ran' } });
    const fields = (over: Partial<{ from: string; to: string; at: number; nonce: string; requestSha256: string }> = {}) => ({
      from: 'node-b',
      to: 'node-a',
      at: Date.now(),
      nonce: randomBytes(16).toString('base64url'),
      requestSha256: sha256Hex(openMessage),
      ...over,
    });
    /** Dials the relay; resolves with the HTTP refusal, or with what the socket got until it closed. */
    const dial = (url: string, headers: Record<string, string>, message = openMessage) =>
      new Promise<{ status: number; body: string } | { closeCode: number; messages: string[] }>((resolve, reject) => {
        const ws = new WebSocket(url, { headers });
        const messages: string[] = [];
        ws.on('unexpected-response', (_req, res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        ws.on('open', () => ws.send(message));
        ws.on('message', (data: Buffer) => messages.push(data.toString('utf8')));
        ws.on('close', (code) => resolve({ closeCode: code, messages }));
        ws.on('error', reject);
      });
    const opensBefore = await shellOpens();
    const badBefore = await relayCount(a, 'holder', 'bad_signature');
    const refusedUpgrades: [string, string, Record<string, string>][] = [
      ['no relay headers at all', relayUrl, {}],
      ['a flipped signature', relayUrl, { ...relayHeaders(relayKey, fields()), 'x-vmkit-shell-relay-signature': '0'.repeat(64) }],
      ['a key of its own', relayUrl, relayHeaders(Buffer.alloc(32, 7), fields())],
      ['a stale timestamp', relayUrl, relayHeaders(relayKey, fields({ at: Date.now() - 3_600_000 }))],
      ['a relay meant for B sent to A', relayUrl, relayHeaders(relayKey, fields({ from: 'node-a', to: 'node-b' }))],
      ['the marker alone', relayUrl, { 'x-vmkit-shell-relay-from': 'node-b' }],
    ];
    for (const [what, url, headers] of refusedUpgrades) {
      const r = await dial(url, headers);
      t.match(r, { status: 403, body: /signature does not verify/ }, what);
    }
    t.equal(await relayCount(a, 'holder', 'bad_signature'), badBefore + refusedUpgrades.length, 'A counted every refusal');

    // Signed, but the open message is not the one signed: the socket is closed, nothing opens.
    const swapped = await dial(relayUrl, relayHeaders(relayKey, fields()), openMessage.replace('forged-ran', 'other-ran'));
    t.match(swapped, { closeCode: 1008, messages: [] }, 'another request than the one signed: closed with 1008');

    // A properly signed relay opens (this is what B does) — and the same headers played again are refused.
    const signed = relayHeaders(relayKey, fields());
    const first = await dial(relayUrl, signed);
    t.match(first, { closeCode: 1000 }, 'the signed relay ran');
    t.match('messages' in first ? first.messages[0] : '', /"type":"opened"/, 'and was answered opened');
    const replay = await dial(relayUrl, signed);
    t.match(replay, { status: 403 }, 'the same signed headers a second time: refused');
    t.equal(await shellOpens(), opensBefore + 1, 'only the properly signed relay sent a shell.open to the agent');
    t.equal(a.ctx.hub?.channels.stats().open, 0, 'no channel is left open on A');
  });

  t.test('the operator goes away on B: A closes its channel (the remote shell ends)', async (t) => {
    const s = await shellViaB();
    s.type('echo still-here\r');
    await s.waitFor(/still-here/);
    t.equal(a.ctx.hub?.channels.stats().open, 1, 'A has the channel open');
    s.ws.close();
    await eventually("A's channel to close", () => (a.ctx.hub?.channels.stats().open === 0 ? true : undefined));
    t.pass('A closed its channel once B let go');
  });

  t.test('the relay socket drops (as when A is killed): the operator on B sees the session end once', async (t) => {
    // What SIGKILL does to A's end of the relay: its TCP connection is gone at once, nothing said.
    const relaySockets: Duplex[] = [];
    const onUpgrade = (req: IncomingMessage, socket: Duplex) => {
      if (req.url?.startsWith(SHELL_RELAY_PATH)) relaySockets.push(socket);
    };
    a.app.server.on('upgrade', onUpgrade);
    t.teardown(() => a.app.server.off('upgrade', onUpgrade));
    const s = await shellViaB();
    let exits = 0;
    s.ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary && (JSON.parse(data.toString('utf8')) as { type: string }).type === 'exit') exits++;
    });
    s.type('echo before-the-drop\r');
    await s.waitFor(/before-the-drop/);
    t.equal(relaySockets.length, 1, 'one relay connection to A');
    for (const socket of relaySockets) socket.destroy();
    t.match(await s.waitExit(), { reason: 'agent_disconnected', message: /agent disconnected/ });
    await s.waitClosed();
    t.equal(exits, 1, 'one exit message');
    await eventually("A's channel to close", () => (a.ctx.hub?.channels.stats().open === 0 ? true : undefined));
    t.pass('A closed the channel whose relay dropped');
  });

  t.test('A closes while a relayed session is open: the operator on B sees it end once, with the reason', async (t) => {
    const s = await shellViaB();
    let exits = 0;
    s.ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary && (JSON.parse(data.toString('utf8')) as { type: string }).type === 'exit') exits++;
    });
    s.type('echo before-a-goes\r');
    await s.waitFor(/before-a-goes/);
    await a.close();
    const exit = await s.waitExit();
    t.match(exit, { reason: 'agent_disconnected', message: /agent disconnected/ });
    await s.waitClosed();
    t.equal(exits, 1, 'one exit message');
    const list = await b.api<{ items: { id: string; end_reason: string | null; ended_at: string | null }[] }>('GET', '/api/shell-sessions?limit=500', { key: operator.secret });
    const row = list.body.items.find((x) => x.id === s.opened?.session_id);
    t.match(row, { end_reason: 'agent_disconnected' }, "B's session row says why");
    t.ok(row?.ended_at, 'and is closed');
  });
}

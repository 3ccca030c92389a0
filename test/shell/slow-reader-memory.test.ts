import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import WebSocket from 'ws';
import { shellPath } from '../../control-plane/src/shell/operator-wire.ts';
import type { ApiRequestOptions } from '../helpers/control-plane.ts';
import { freePort, startControlPlaneProcess } from '../helpers/cp-process.ts';
import { fileNeeds, prerequisite } from '../helpers/prereq.ts';
import { enrollRealAgent, plainBashShell, waitAgentState } from '../helpers/real-agent.ts';
import { bytesRead, catPid } from '../helpers/proc.ts';

/**
 * A 50 MB `cat` through an operator who reads slowly, through both doors: the control
 * plane (its own process) and the real agent must not buffer what the operator has not
 * read. Flow control is credit based on each hop (the agent's 256 KB window, the ssh
 * channel window, the operator socket's writes), so both processes' RSS stays within a
 * bound while every byte still arrives.
 *
 * The bound: RSS growth over the level just before the transfer stays under 64 MB in
 * each process (a relay that buffered the file would grow by at least its 50 MB plus
 * the copies it makes). Separately, `cat` itself is never more than 16 MB ahead of what
 * the operator has read (the windows plus the kernel's socket buffers): without
 * backpressure it would finish at once, 50 MB ahead.
 */

const MB = 1024 * 1024;
const FILE_BYTES = 50 * MB;
const RSS_BOUND = 64 * MB;
const LEAD_BOUND = 16 * MB;

const notRoot = process.getuid?.() === 0 ? false : 'the agent must run shells as root here (tests run as root under CI)';
const noSsh = spawnSync('ssh', ['-V']).error ? 'OpenSSH client (ssh) is not installed' : false;
const noProc = (() => {
  try {
    readFileSync('/proc/self/status', 'utf8');
    return false;
  } catch {
    return 'no /proc to read RSS from';
  }
})();

function rss(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  if (kb === undefined) throw new Error(`no VmRSS for ${pid}`);
  return Number(kb) * 1024;
}



/** Samples RSS of both processes and how far `cat` runs ahead of the reader, every 50 ms while a transfer runs. */
class Watch {
  readonly base: Record<string, number>;
  readonly peak: Record<string, number>;
  maxLead = 0;
  catSeen = false;
  error: Error | undefined;
  #catPid: number | undefined;
  readonly #timer: NodeJS.Timeout;

  readonly pids: Record<string, number>;
  readonly file: string;
  readonly received: () => number;
  constructor(
    pids: Record<string, number>,
    file: string,
    received: () => number,
  ) {
    this.pids = pids;
    this.file = file;
    this.received = received;
    this.base = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, rss(pid)]));
    this.peak = { ...this.base };
    this.#timer = setInterval(() => {
      try {
        this.sample();
      } catch (err) {
        // A process gone mid-transfer: the transfer's own assertions say so.
        clearInterval(this.#timer);
        this.error = err as Error;
      }
    }, 50);
  }

  sample(): void {
    if (process.env.VMKIT_TEST_DEBUG) process.stderr.write(`received ${this.received()} rss ${JSON.stringify(this.peak)} lead ${this.maxLead}\n`);
    for (const [k, pid] of Object.entries(this.pids)) this.peak[k] = Math.max(this.peak[k] ?? 0, rss(pid));
    this.#catPid ??= catPid(this.file);
    if (this.#catPid === undefined) return;
    this.catSeen = true;
    const read = bytesRead(this.#catPid);
    // cat's rchar counts the file and the shared libraries it loads: a few kB of slack.
    if (read !== undefined) this.maxLead = Math.max(this.maxLead, read - this.received());
  }

  stop(): void {
    clearInterval(this.#timer);
    this.sample();
  }

  growth(k: string): number {
    return (this.peak[k] ?? 0) - (this.base[k] ?? 0);
  }
}

/** A reader that pauses 50 ms after every 512 KB: at most ~10 MB/s, slower than the relay. */
class SlowReader {
  bytes = 0;
  readonly hash = createHash('sha256');
  #sincePause = 0;
  readonly pause: () => void;
  readonly resume: () => void;
  constructor(
    pause: () => void,
    resume: () => void,
  ) {
    this.pause = pause;
    this.resume = resume;
  }
  take(chunk: Buffer): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    this.#sincePause += chunk.length;
    if (this.#sincePause >= 512 * 1024) {
      this.#sincePause = 0;
      this.pause();
      setTimeout(() => this.resume(), 50);
    }
  }
}

if (fileNeeds(notRoot || noProc)) {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-slow-reader-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  // 50 MB of base64 lines. Through the PTY each \n becomes \r\n (onlcr): that is what arrives.
  const file = join(dir, 'big.txt');
  const lines: string[] = [];
  const raw = randomBytes((FILE_BYTES / 100) * 75).toString('base64');
  for (let i = 0; i < FILE_BYTES / 100; i++) lines.push(raw.slice(i * 99, i * 99 + 99));
  const content = `${lines.join('\n')}\n`;
  writeFileSync(file, content, { mode: 0o644 });
  const expected = Buffer.from(content.replace(/\n/g, '\r\n'), 'utf8');
  const expectedHash = createHash('sha256').update(expected).digest('hex');
  if (Buffer.byteLength(content) !== FILE_BYTES) throw new Error('the test file is not 50 MB');

  const sshPort = await freePort();
  const port = await freePort();
  const cp = await startControlPlaneProcess({
    dataDir: join(dir, 'cp'),
    port,
    env: { VMKIT_SSH_GATEWAY_PORT: String(sshPort), VMKIT_SSH_GATEWAY_HOST: '127.0.0.1' },
  });
  t.teardown(async () => {
    cp.kill('SIGTERM');
    await cp.exited;
  });
  const cpPid = cp.child.pid ?? 0;
  const plane = {
    url: cp.url,
    api: <T>(method: string, path: string, o: ApiRequestOptions = {}) => cp.api<T>(method, path, o.body),
  };
  const agent = await enrollRealAgent(t, plane, { name: 'slow-reader-vm' });
  agent.patchConfig({ shell: { default_user: 'root', allow_root: true, max_sessions: 4, program: plainBashShell() } });
  const proc = agent.start();
  await waitAgentState(plane, agent.instanceId, 'connected', 120_000);
  const agentPid = proc.child.pid ?? 0;
  const pids = { 'control plane': cpPid, agent: agentPid };

  const check = (t: Test, watch: Watch, reader: SlowReader) => {
    t.error(watch.error, 'both processes lived through the transfer');
    t.equal(reader.bytes, expected.length, 'every byte arrived');
    t.equal(reader.hash.digest('hex'), expectedHash, 'the bytes are the file (sha256)');
    t.ok(watch.catSeen, 'cat was seen running while the reader lagged');
    t.ok(watch.maxLead < LEAD_BOUND, `cat never ran more than ${LEAD_BOUND / MB} MB ahead of the reader (${(watch.maxLead / MB).toFixed(1)} MB)`);
    for (const k of Object.keys(pids)) {
      const g = watch.growth(k);
      t.ok(g < RSS_BOUND, `${k} RSS grew ${(g / MB).toFixed(1)} MB over ${((watch.base[k] ?? 0) / MB).toFixed(0)} MB (bound ${RSS_BOUND / MB} MB)`);
    }
  };

  t.test('the WebSocket door: a reader that keeps pausing the socket', async (t) => {
    const open = (command: string, onData: (ws: WebSocket, chunk: Buffer) => void) =>
      new Promise<{ code: number | null; reason: string }>((resolve, reject) => {
        const u = new URL(cp.url + shellPath('slow-reader-vm'));
        u.protocol = 'ws:';
        u.searchParams.set('command', command);
        const ws = new WebSocket(u, { headers: { authorization: `Bearer ${cp.adminKey}` }, perMessageDeflate: false });
        let exit: { code: number | null; reason: string } | undefined;
        ws.on('message', (data: Buffer, isBinary) => {
          if (isBinary) return onData(ws, data);
          const msg = JSON.parse(data.toString('utf8')) as { type: string; code: number | null; reason: string };
          if (msg.type === 'exit') exit = msg;
        });
        ws.on('unexpected-response', (_req, res) => reject(new Error(`refused: HTTP ${res.statusCode}`)));
        ws.on('error', reject);
        ws.on('close', () => (exit ? resolve(exit) : reject(new Error('closed without an exit message'))));
      });
    // Warm up the door so the baseline is the steady state: modules, the first session,
    // and a first 16 MB through the data path read at full speed (JIT, the heap's first
    // growth, the recording writer). Under load a fresh process's first transfer alone grew
    // its RSS by up to 86 MB of garbage not yet collected, while `cat` never ran more than
    // 2.4 MB ahead (nothing was buffered); the bound is about buffering, not first growth.
    let warmed = 0;
    t.match(await open('head -c 12582912 /dev/urandom | base64 -w 99', (_ws, chunk) => (warmed += chunk.length)), { code: 0, reason: 'exit' });
    t.ok(warmed > 16 * MB, 'the warm-up moved 16 MB through the door');

    let socket: WebSocket | undefined;
    const reader = new SlowReader(
      () => socket?.pause(),
      () => socket?.resume(),
    );
    const watch = new Watch(pids, file, () => reader.bytes);
    const exit = await open(`cat ${file}`, (ws, chunk) => {
      socket = ws;
      reader.take(chunk);
    }).finally(() => watch.stop());
    t.match(exit, { code: 0, reason: 'exit' });
    check(t, watch, reader);
  });

  t.test('the SSH gateway: OpenSSH whose stdout is drained slowly', { skip: prerequisite(noSsh) }, async (t) => {
    const keyFile = join(dir, 'operator');
    spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', keyFile]);
    const keys = await cp.api<{ items: { id: string; name: string }[] }>('GET', '/api/keys');
    const adminKeyId = keys.body.items[0]?.id ?? '';
    const added = await cp.api('POST', `/api/keys/${adminKeyId}/ssh-keys`, { public_key: readFileSync(`${keyFile}.pub`, 'utf8') });
    t.equal(added.status, 201);
    const ssh = (command: string, onData?: (child: ReturnType<typeof spawn>, chunk: Buffer) => void) =>
      new Promise<number | null>((resolve) => {
        const child = spawn(
          'ssh',
          ['-p', String(sshPort), '-i', keyFile, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no',
            '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-F', '/dev/null', 'slow-reader-vm@127.0.0.1', command],
          { stdio: ['ignore', 'pipe', 'inherit'] },
        );
        child.stdout.on('data', (c: Buffer) => onData?.(child, c));
        child.on('close', (code) => resolve(code));
      });
    t.equal(await ssh('echo warm'), 0);

    let child: ReturnType<typeof spawn> | undefined;
    const reader = new SlowReader(
      () => child?.stdout?.pause(),
      () => child?.stdout?.resume(),
    );
    const watch = new Watch(pids, file, () => reader.bytes);
    const code = await ssh(`cat ${file}`, (c, chunk) => {
      child = c;
      reader.take(chunk);
    }).finally(() => watch.stop());
    t.equal(code, 0);
    check(t, watch, reader);
  });
}

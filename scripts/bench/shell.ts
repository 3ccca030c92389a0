/**
 * ops shell benchmark (root: the agent runs shells as root, the sshd baseline is a sandbox VM).
 *
 *   node --import tsx scripts/bench/shell.ts [--keys 300] [--mb 50] [--idle 20]
 *
 * The same remote program on four paths: a PTY running `stty raw -echo; cat` (every byte
 * typed comes straight back, echoed by the program as an editor or readline would):
 *   - direct local PTY (node-pty in this process): the floor;
 *   - the WebSocket door (what `vmkit shell` speaks): client → control plane → agent → PTY;
 *   - the SSH gateway (ssh2 client, the gateway on the control plane) → agent → PTY;
 *   - plain ssh (same ssh2 client) to the sshd of a local sandbox VM.
 * Keystroke echo: one byte at a time, the next sent once the previous came back; p50/p99.
 * Throughput: `head -c N /dev/zero | tr '\0' x` through each path, first to last byte.
 * Idle memory: RSS of the control-plane process and of the agent process before and
 * after `--idle` idle interactive sessions per door, per session. The control plane is
 * its own process (`vmkit-control-plane serve`) and the agent the real vmkit-agent, both
 * on this machine. Figures, not assertions.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { spawn as spawnPty } from 'node-pty';
import ssh2 from 'ssh2';
import { generateEd25519KeyPair } from '../../control-plane/src/shell/ssh-key.ts';
import WebSocket from 'ws';
import { shellPath } from '../../control-plane/src/shell/operator-wire.ts';
import type { ApiRequestOptions } from '../../test/helpers/control-plane.ts';
import { freePort, startControlPlaneProcess } from '../../test/helpers/cp-process.ts';
import { enrollRealAgent, plainBashShell, waitAgentState } from '../../test/helpers/real-agent.ts';
import { sandboxSkipReason, startSandbox } from '../../test/helpers/sandbox.ts';

const { values } = parseArgs({ options: { keys: { type: 'string', default: '300' }, mb: { type: 'string', default: '50' }, idle: { type: 'string', default: '20' } } });
const KEYS = Math.max(10, Number(values.keys));
const BYTES = Math.max(1, Number(values.mb)) * 1024 * 1024;
const IDLE = Math.max(1, Number(values.idle));

if (process.getuid?.() !== 0) {
  process.stdout.write('shell: skipped (needs root: the agent runs shells as root here)\n');
  process.exit(0);
}

const ECHO_PROGRAM = 'stty raw -echo && echo READY && exec cat';
// The pause keeps the terminal open until the tail is read (a PTY whose last holder
// exits answers EIO, and node-pty drops what was unread); timing stops at the last byte.
const FLOOD_PROGRAM = `head -c ${BYTES} /dev/zero | tr '\\0' x; sleep 1`;
const MB = 1024 * 1024;

/** Bytes in, callbacks out: what each path is reduced to. */
interface Pipe {
  write(data: string): void;
  onData(cb: (chunk: Buffer) => void): void;
  /** Resolves when the remote program exits. */
  exited: Promise<void>;
  close(): void;
}

const cleanups: (() => unknown)[] = [];
const teardown = { teardown: (fn: () => unknown) => void cleanups.push(fn) };

function rss(pid: number): number {
  return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) * 1024;
}

/** A bound for a stuck step (the bench then fails saying which), not a timing. */
function within<T>(p: Promise<T>, what: string, ms = 120_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise<never>((_r, reject) => (timer = setTimeout(() => reject(new Error(`stuck: ${what}`)), ms)));
  return Promise.race([p, stuck]).finally(() => clearTimeout(timer));
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * (s.length - 1)))] ?? NaN;
}

/** Collects a pipe's output; `until(n)` resolves once n bytes have arrived in all. */
class Counter {
  bytes = 0;
  text = '';
  #waiters: [number, () => void][] = [];
  constructor(pipe: Pipe, keepText: boolean) {
    pipe.onData((c) => {
      this.bytes += c.length;
      if (keepText) this.text += c.toString('latin1');
      this.#waiters = this.#waiters.filter(([n, w]) => (this.bytes >= n ? (w(), false) : true));
    });
  }
  until(n: number): Promise<void> {
    return this.bytes >= n ? Promise.resolve() : new Promise((resolve) => this.#waiters.push([n, resolve]));
  }
}

async function echoRoundTrips(open: Open): Promise<number[]> {
  const pipe = await open(ECHO_PROGRAM);
  const c = new Counter(pipe, true);
  while (!c.text.includes('READY')) await c.until(c.bytes + 1);
  // Whatever came with READY (its newline) is not an echo.
  await new Promise((r) => setImmediate(r));
  const times: number[] = [];
  for (let i = 0; i < KEYS; i++) {
    const want = c.bytes + 1;
    const t0 = performance.now();
    pipe.write('x');
    await c.until(want);
    times.push(performance.now() - t0);
  }
  pipe.close();
  return times.slice(5); // the first few warm the path up
}

async function throughput(open: Open): Promise<number> {
  const pipe = await open(FLOOD_PROGRAM);
  let first = 0;
  let last = 0;
  let bytes = 0;
  pipe.onData((c) => {
    last = performance.now();
    if (bytes === 0) first = last;
    bytes += c.length;
  });
  await pipe.exited;
  const ms = last - first;
  if (bytes < BYTES) throw new Error(`only ${bytes} of ${BYTES} bytes arrived`);
  return bytes / MB / (ms / 1000);
}

// ---- the four paths

type Open = (program?: string) => Promise<Pipe>;

/** Output that arrives before anyone listens (with the upgrade's first bytes, say) is kept for the first listener. */
class Fanout {
  #cbs: ((c: Buffer) => void)[] = [];
  #pending: Buffer[] | null = [];
  push(c: Buffer): void {
    if (this.#pending) this.#pending.push(c);
    else for (const cb of this.#cbs) cb(c);
  }
  add(cb: (c: Buffer) => void): void {
    this.#cbs.push(cb);
    const early = this.#pending ?? [];
    this.#pending = null;
    for (const c of early) cb(c);
  }
}

const localPty: Open = (program = 'exec /bin/bash --noprofile --norc') => {
  const p = spawnPty('/bin/sh', ['-c', program], { name: 'xterm', cols: 120, rows: 40, encoding: null, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
  const exited = new Promise<void>((resolve) => p.onExit(() => resolve()));
  const out = new Fanout();
  // encoding null: node-pty hands Buffers (typed as string).
  p.onData((d) => out.push(Buffer.isBuffer(d) ? d : Buffer.from(d, 'latin1')));
  return Promise.resolve({
    write: (d) => p.write(d),
    onData: (cb) => out.add(cb),
    exited,
    close: () => p.kill(),
  });
};

function wsDoor(baseUrl: string, key: string, instance: string): Open {
  return (program) =>
    new Promise((resolve, reject) => {
      const u = new URL(baseUrl + shellPath(instance));
      u.protocol = 'ws:';
      u.searchParams.set('cols', '120');
      u.searchParams.set('rows', '40');
      if (program !== undefined) u.searchParams.set('command', program);
      const ws = new WebSocket(u, { headers: { authorization: `Bearer ${key}` }, perMessageDeflate: false });
      const out = new Fanout();
      const exited = new Promise<void>((res) => ws.on('close', () => res()));
      ws.on('message', (data: Buffer, isBinary) => {
        if (isBinary) out.push(data);
      });
      ws.once('open', () =>
        resolve({
          write: (d) => ws.send(Buffer.from(d, 'latin1'), { binary: true }),
          onData: (cb) => out.add(cb),
          exited,
          close: () => ws.close(),
        }),
      );
      ws.once('unexpected-response', (_q, res) => reject(new Error(`refused: HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    });
}

function sshPath(cfg: ssh2.ConnectConfig): Open {
  return (program) =>
    new Promise((resolve, reject) => {
      const conn = new ssh2.Client();
      conn.on('error', reject);
      conn.on('ready', () => {
        // As OpenSSH does for interactive sessions: no Nagle delay on keystrokes.
        conn.setNoDelay(true);
        const opened = (err: Error | undefined, stream: ssh2.ClientChannel) => {
          if (err) return reject(err);
          const exited = new Promise<void>((res) => stream.on('close', () => res()));
          void exited.then(() => conn.end());
          stream.stderr.resume();
          resolve({
            write: (d) => void stream.write(d),
            onData: (cb) => void stream.on('data', cb),
            exited,
            close: () => {
              stream.close();
              conn.end();
            },
          });
        };
        const pty = { term: 'xterm', cols: 120, rows: 40 };
        if (program === undefined) conn.shell(pty, opened);
        else conn.exec(program, { pty }, opened);
      });
      conn.connect({ ...cfg, readyTimeout: 60_000 });
    });
}

// ---- set-up

const dir = mkdtempSync(join(tmpdir(), 'vmkit-bench-shell-'));
cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
try {
  const port = await freePort();
  const sshPort = await freePort();
  const cp = await startControlPlaneProcess({ dataDir: join(dir, 'cp'), port, env: { VMKIT_SSH_GATEWAY_PORT: String(sshPort), VMKIT_SSH_GATEWAY_HOST: '127.0.0.1' } });
  cleanups.push(async () => {
    cp.kill('SIGTERM');
    await cp.exited;
  });
  const plane = { url: cp.url, api: <T>(m: string, p: string, o: ApiRequestOptions = {}) => cp.api<T>(m, p, o.body) };
  const agent = await enrollRealAgent(teardown, plane, { name: 'bench-vm' });
  agent.patchConfig({ shell: { default_user: 'root', allow_root: true, max_sessions: IDLE * 2 + 8, program: plainBashShell() } });
  const agentProc = agent.start();
  await waitAgentState(plane, agent.instanceId, 'connected', 120_000);

  const keys = await cp.api<{ items: { id: string }[] }>('GET', '/api/keys');
  const sshKey = generateEd25519KeyPair('bench');
  const added = await cp.api('POST', `/api/keys/${keys.body.items[0]?.id ?? ''}/ssh-keys`, { public_key: sshKey.public });
  if (added.status !== 201) throw new Error(`registering the SSH key: ${added.status}`);

  const ws = wsDoor(cp.url, cp.adminKey, 'bench-vm');
  const gw = sshPath({ host: '127.0.0.1', port: sshPort, username: 'bench-vm', privateKey: sshKey.private });
  const paths: [string, Open][] = [
    ['direct local PTY', localPty],
    ['WebSocket door (vmkit shell)', ws],
    ['SSH gateway', gw],
  ];
  let plainNote = '';
  if (sandboxSkipReason) plainNote = `plain ssh to a sandbox sshd: skipped (${sandboxSkipReason})`;
  else {
    const sb = await startSandbox(teardown, { name: 'bench-sshd', rootPassword: 'bench-shell-pw' });
    cleanups.push(() => sb.destroy());
    // bash without dotfiles, as the agent runs it: the echo program is the same `sh -c`.
    paths.push(['plain ssh to the sandbox sshd', sshPath({ host: sb.vm.address, port: 22, username: 'root', password: 'bench-shell-pw', tryKeyboard: false })]);
  }

  const echo: Record<string, number[]> = {};
  const rate: Record<string, number> = {};
  for (const [name, open] of paths) {
    echo[name] = await within(echoRoundTrips(open), `${name}: echo round trips`, 600_000);
    rate[name] = await within(throughput(open), `${name}: throughput`, 600_000);
  }

  // Idle sessions: interactive shells that type nothing.
  const idle: Record<string, { cp: number; agent: number }> = {};
  for (const [name, open] of [
    ['WebSocket door', ws],
    ['SSH gateway', gw],
  ] as const) {
    const before = { cp: rss(cp.child.pid ?? 0), agent: rss(agentProc.child.pid ?? 0) };
    const held: Pipe[] = [];
    for (let i = 0; i < IDLE; i++) {
      const p = await within(open(), `${name}: opening idle session ${i + 1}`);
      const c = new Counter(p, false);
      await within(c.until(1), `${name}: the prompt of idle session ${i + 1}`); // the session is up at both ends
      held.push(p);
    }
    const after = { cp: rss(cp.child.pid ?? 0), agent: rss(agentProc.child.pid ?? 0) };
    idle[name] = { cp: (after.cp - before.cp) / IDLE, agent: (after.agent - before.agent) / IDLE };
    for (const p of held) p.close();
    await Promise.all(held.map((p) => p.exited));
  }

  const bashRss = (() => {
    const r = spawnSync('ps', ['-o', 'rss=', '-C', 'bash'], { encoding: 'utf8' });
    const xs = r.stdout.split('\n').map(Number).filter((n) => n > 0);
    return xs.length > 0 ? quantile(xs, 0.5) / 1024 : NaN;
  })();

  const pad = (s: string, n: number) => s.padEnd(n);
  const out = [
    `shell: ${cpus().length} CPUs, ${(totalmem() / 1024 ** 3).toFixed(0)} GB, load ${loadavg().map((l) => l.toFixed(1)).join(' ')}; ${KEYS} keystrokes, ${BYTES / MB} MB, ${IDLE} idle sessions per door`,
    `  ${pad('path', 32)} ${pad('echo p50', 10)} ${pad('echo p99', 10)} throughput`,
    ...paths.map(([name]) => {
      const xs = echo[name] ?? [];
      return `  ${pad(name, 32)} ${pad(`${quantile(xs, 0.5).toFixed(2)} ms`, 10)} ${pad(`${quantile(xs, 0.99).toFixed(2)} ms`, 10)} ${(rate[name] ?? NaN).toFixed(0)} MB/s`;
    }),
    ...(plainNote ? [`  ${plainNote}`] : []),
    `  idle session memory (RSS growth per session):`,
    ...Object.entries(idle).map(([name, m]) => `    ${pad(name, 16)} control plane ${(m.cp / 1024).toFixed(0)} kB, agent ${(m.agent / 1024).toFixed(0)} kB`),
    `    (each session's shell is its own process on the VM besides: bash, median RSS ${bashRss.toFixed(1)} MB here)`,
    '',
  ];
  process.stdout.write(out.join('\n'));
} finally {
  for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
}

/**
 * The init of a local VM sandbox. Started by the host as
 *   ip netns exec <netns> unshare -m -p -u -f --mount-proc --kill-child sh -c <reaper> node --import tsx local-supervisor.ts <dir>
 * (the sh reaper is PID 1 and reaps orphans; this is PID 2), it boots the sandbox like
 * a fresh cloud VM (private overlays, hostname, host keys, root password, sshd with
 * root and password login allowed), then keeps sshd and the optional guest program
 * running. When it exits, the reaper exits, the kernel kills everything left in the
 * sandbox's pid namespace, and its mounts vanish with the mount namespace.
 * Its stdout/stderr are supervisor.log in the sandbox folder.
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join, relative, isAbsolute } from 'node:path';
import { startRelay } from './local-relay.ts';
import { BOOT_FILE, PROGRAM_LOG, READY_LINE, SSHD_LOG, isBootConfig, overlayName } from './local-boot.ts';
import type { BootConfig, GuestStep } from './local-boot.ts';

const BASE_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' };

function log(msg: string): void {
  process.stdout.write(`[supervisor ${new Date().toISOString()}] ${msg}\n`);
}

function must(cmd: string, args: string[], input?: string): void {
  const r = spawnSync(cmd, args, { input: input ?? '', encoding: 'utf8', env: BASE_ENV, timeout: 60_000 });
  if (r.status !== 0) {
    const why = (r.stderr || r.stdout || r.error?.message || `signal ${r.signal ?? '?'}`).trim();
    throw new Error(`${cmd} ${args.join(' ')} failed: ${why}`);
  }
}

function inside(parent: string, child: string): boolean {
  const rel = relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

function mountOverlays(dir: string, targets: string[]): void {
  must('mount', ['--make-rprivate', '/']);
  // Paths into the sandbox folder are resolved at mount time, so an overlay over a
  // directory that holds the folder itself (e.g. /tmp in tests) goes last.
  const ordered = [...targets].sort((a, b) => Number(inside(a, dir)) - Number(inside(b, dir)));
  for (const target of ordered) {
    const upper = join(dir, 'fs', overlayName(target), 'upper');
    const work = join(dir, 'fs', overlayName(target), 'work');
    mkdirSync(upper, { recursive: true, mode: 0o755 });
    mkdirSync(work, { recursive: true, mode: 0o700 });
    must('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${target},upperdir=${upper},workdir=${work}`, target]);
  }
}

function setHostname(name: string): void {
  must('hostname', [name]);
  writeFileSync('/etc/hostname', `${name}\n`);
  const hosts = readFileSync('/etc/hosts', 'utf8');
  if (!hosts.split('\n').some((l) => l.split(/\s+/).slice(1).includes(name))) {
    writeFileSync('/etc/hosts', `${hosts.replace(/\n?$/, '\n')}127.0.1.1\t${name}\n`);
  }
}

/** Fresh host keys of the sandbox's own, never the host's. */
function regenerateHostKeys(): void {
  for (const f of readdirSync('/etc/ssh')) {
    if (/^ssh_host_.*_key(\.pub)?$/.test(f)) rmSync(join('/etc/ssh', f));
  }
  must('ssh-keygen', ['-A']);
}

/**
 * Like a fresh cloud image with a root password: cloud-init's drop-in enables
 * passwords and the main file permits root login (after its Include line, so a
 * hardening drop-in still wins).
 */
function configureSshd(rootPassword: string): void {
  must('chpasswd', [], `root:${rootPassword}\n`);
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  mkdirSync('/etc/ssh/sshd_config.d', { recursive: true, mode: 0o755 });
  writeFileSync('/etc/ssh/sshd_config.d/50-cloud-init.conf', 'PasswordAuthentication yes\n', { mode: 0o600 });
  const main = readFileSync('/etc/ssh/sshd_config', 'utf8');
  const line = /^[ \t]*#?[ \t]*PermitRootLogin\b.*$/m;
  let next: string;
  if (line.test(main)) next = main.replace(line, 'PermitRootLogin yes');
  else {
    const match = /^[ \t]*Match\b/im.exec(main);
    next =
      match === null
        ? `${main.replace(/\n?$/, '\n')}PermitRootLogin yes\n`
        : `${main.slice(0, match.index)}PermitRootLogin yes\n${main.slice(match.index)}`;
  }
  writeFileSync('/etc/ssh/sshd_config', next);
  must('/usr/sbin/sshd', ['-t']);
}

function portAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.setTimeout(1000);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
    s.once('timeout', () => {
      s.destroy();
      resolve(false);
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let stopping = false;
const children = new Set<ChildProcess>();

function start(argv: string[], fd: number, env: Record<string, string>, cwd: string): ChildProcess {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error('empty argv');
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], env: { ...BASE_ENV, HOME: '/root', ...env }, cwd });
  children.add(child);
  child.on('exit', () => children.delete(child));
  child.on('error', (e) => log(`${cmd}: ${e.message}`));
  return child;
}

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.once('error', () => resolve(null));
  });
}

/** Keeps sshd running as systemd's Restart=on-failure would, with a bounded rate. */
async function superviseSshd(fd: number): Promise<void> {
  const starts: number[] = [];
  while (!stopping) {
    starts.push(Date.now());
    const code = await exited(start(['/usr/sbin/sshd', '-D', '-e'], fd, {}, '/'));
    if (stopping) return;
    log(`sshd exited (${code ?? 'signal'})`);
    while (starts.length > 0 && (starts[0] ?? 0) < Date.now() - 60_000) starts.shift();
    if (starts.length >= 5) {
      log('sshd keeps exiting; not restarting it again');
      return;
    }
    await sleep(1000);
  }
}

async function runProgram(steps: GuestStep[], restartLast: boolean, fixedDelayMs: number | undefined, fd: number): Promise<void> {
  for (const [i, step] of steps.entries()) {
    const last = i === steps.length - 1;
    let delay = fixedDelayMs ?? 1000;
    for (;;) {
      if (stopping) return;
      log(`program step ${i + 1}/${steps.length}: ${step.argv[0] ?? ''}`);
      const code = await exited(start(step.argv, fd, step.env ?? {}, step.cwd ?? '/root'));
      log(`program step ${i + 1} exited (${code ?? 'signal'})`);
      if (!last) {
        if (code !== 0) return;
        break;
      }
      if (!restartLast || stopping) return;
      await sleep(delay);
      if (fixedDelayMs === undefined) delay = Math.min(delay * 2, 10_000);
    }
  }
}

function shutdown(): void {
  if (stopping) return;
  stopping = true;
  log('stopping');
  for (const c of children) c.kill('SIGTERM');
  setTimeout(() => process.exit(0), 1500).unref();
}

async function main(): Promise<void> {
  const dir = process.argv[2];
  if (dir === undefined || !isAbsolute(dir)) throw new Error('usage: local-supervisor.ts <absolute sandbox dir>');
  const bootPath = join(dir, BOOT_FILE);
  const boot: unknown = JSON.parse(readFileSync(bootPath, 'utf8'));
  rmSync(bootPath); // it holds the root password and the enrollment token
  if (!isBootConfig(boot)) throw new Error('boot.json is not a valid boot config');
  const cfg: BootConfig = boot;
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  // Opened before the overlays, which may hide the sandbox folder's real files.
  const sshdLog = openSync(join(dir, SSHD_LOG), 'a', 0o600);
  const programLog = openSync(join(dir, PROGRAM_LOG), 'a', 0o600);
  mountOverlays(dir, cfg.overlays);
  setHostname(cfg.hostname);
  regenerateHostKeys();
  configureSshd(cfg.root_password);
  void superviseSshd(sshdLog);
  for (let i = 0; i < 200 && !(await portAnswers(22)); i++) await sleep(50);
  for (const f of cfg.forwards ?? []) {
    const server = await startRelay(f);
    log(`relay ${f.listen_host}:${f.listen_port} -> ${f.target_host}:${f.target_port}${server ? '' : ' not started: address in use'}`);
  }
  log(READY_LINE);
  if (cfg.program !== undefined && cfg.program.steps.length > 0) {
    void runProgram(cfg.program.steps, cfg.program.restart_last ?? false, cfg.program.restart_delay_ms, programLog);
  }
  // Keep PID 1 alive for as long as the sandbox lives.
  setInterval(() => undefined, 1 << 30);
}

main().catch((err: unknown) => {
  log(`boot failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});

/**
 * The `local` compute provider: VM-like sandboxes made of Linux namespaces on this
 * machine. Per sandbox: a folder `<baseDir>/<ref>` (state.json, logs, overlay layers),
 * a network namespace with a veth pair on a /30 of a private pool (host end on the
 * host, `eth0` inside), and a supervisor (local-supervisor.ts) in new mount, pid and
 * uts namespaces (under a tiny sh reaper as PID 1) that runs a real sshd and,
 * optionally, the vmkit-agent.
 * It is a test and development box, not a security boundary: root inside shares the
 * host's kernel, /usr and /dev.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BOOT_FILE, RELAY_LOG, STATE_FILE, SUPERVISOR_LOG } from './local-boot.ts';
import { RELAY_LISTENING, RELAY_NOT_NEEDED } from './local-relay.ts';
import type { BootConfig, GuestProgram } from './local-boot.ts';
import { blockAt, hostIpv4Nets, overlaps, parseCidr } from './local-net.ts';
import type { LinkBlock } from './local-net.ts';
import { alive, firstChild, processStart, recorded, sandboxUnavailableReason, sleep } from './local-host.ts';
import { must, run } from './run.ts';
import type { RunResult } from './run.ts';
import { ComputeError } from './types.ts';
import type { AgentEnrollment, ComputeProvider, CreateVmSpec, CreatedVm, VmStatus } from './types.ts';

export type { GuestProgram, GuestStep } from './local-boot.ts';
export { sandboxUnavailableReason } from './local-host.ts';

export const DEFAULT_SUBNET = '10.201.0.0/16';
export const DEFAULT_OVERLAYS = ['/etc', '/home', '/root', '/run', '/var', '/tmp'] as const;
const SUPERVISOR = fileURLToPath(new URL('./local-supervisor.ts', import.meta.url));
const RELAY = fileURLToPath(new URL('./local-relay.ts', import.meta.url));
const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const TSX_LOADER = import.meta.resolve('tsx');
/**
 * PID 1 of the sandbox: a constant POSIX sh script (the supervisor's argv arrives as
 * "$@", never in the script) that runs the supervisor and reaps orphans, which Node
 * cannot do, so processes left by exec or by the agent do not linger as zombies.
 */
const REAPER = [
  '"$@" & main=$!',
  `trap 'kill -TERM "$main" 2>/dev/null' TERM INT`,
  'while kill -0 "$main" 2>/dev/null; do wait "$main"; done',
].join('\n');
const HOST_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' };
const SAFE_PATH = /^\/[A-Za-z0-9._/+-]*$/;
const SAFE_REF = /^[a-z0-9][a-z0-9_-]{0,62}$/;

export interface LocalSandboxOptions {
  /** Folder holding one sub-folder per sandbox; default `<dataDir>/sandboxes`. */
  baseDir: string;
  /** Private IPv4 pool carved into /30 links; default 10.201.0.0/16. */
  subnet?: string;
  /** How long create waits for sshd to answer; default 30 s. */
  bootTimeoutMs?: number;
  /** Directories given a private overlay inside each sandbox. */
  overlays?: readonly string[];
  /** How the agent is started from an enrollment; default `defaultAgentProgram`. */
  agentProgram?: (enrollment: AgentEnrollment, files: AgentFiles) => GuestProgram;
}

/** What create returns for a local sandbox (a CreatedVm plus local details). */
export interface LocalVm extends CreatedVm {
  root_password: string;
  /** The host end of the sandbox's link: where the sandbox reaches the host. */
  host_address: string;
  netns: string;
  dir: string;
}

/** The per-sandbox record on disk, written before each step so destroy can undo a half-made one. */
export interface SandboxState {
  version: 1;
  ref: string;
  dir: string;
  netns: string;
  hostname: string;
  phase: 'creating' | 'booting' | 'running';
  created_at: string;
  /** The process that created it (a test run, a control plane): lets tools find sandboxes whose creator died. */
  owner_pid?: number;
  owner_start?: string;
  host_if?: string;
  link_index?: number;
  host_address?: string;
  guest_address?: string;
  supervisor_pid?: number;
  supervisor_start?: string;
  init_pid?: number;
  init_start?: string;
  /** Host-side relay to a loopback control plane, when one runs. */
  relay_pid?: number;
  relay_start?: string;
}

export interface ExecOptions {
  input?: string | Buffer;
  env?: Record<string, string>;
  timeoutMs?: number;
}

/** A DNS-safe hostname from a human name. */
export function hostnameFor(name: string): string {
  const h = name
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63)
    .replace(/-+$/, '');
  return h === '' ? 'vm' : h;
}

/** The loopback port a control-plane URL points at, or undefined when it is not loopback. */
export function loopbackPort(url: string): number | undefined {
  const u = new URL(url);
  if (u.hostname !== '127.0.0.1' && u.hostname !== 'localhost') return undefined;
  if (u.port !== '') return Number(u.port);
  return u.protocol === 'https:' || u.protocol === 'wss:' ? 443 : 80;
}

/** Files the provider put where the sandbox sees them, for the agent program. */
export interface AgentFiles {
  /** The enrollment's CA (ca_pem), for `enroll --ca-file`. */
  caFile?: string;
}

/**
 * The vmkit-agent of this repository, enrolled then run (restarted when it exits,
 * as its systemd unit would be). The token travels only in the environment, never on
 * the command line, so it stays out of `ps`.
 */
export function defaultAgentProgram(e: AgentEnrollment, files: AgentFiles = {}): GuestProgram {
  const cli = join(REPO_ROOT, 'vmkit-agent', 'src', 'cli.ts');
  const node = [process.execPath, '--import', TSX_LOADER, cli];
  const env = { VMKIT_CONTROL_PLANE_URL: e.control_plane_url, VMKIT_ENROLLMENT_TOKEN: e.token };
  const keys = (e.control_plane_keys ?? []).flatMap((k) => ['--cp-key', k]);
  const urls = [e.control_plane_url, ...(e.more_control_plane_urls ?? [])].flatMap((u) => ['--url', u]);
  const ca = files.caFile === undefined ? [] : ['--ca-file', files.caFile];
  return {
    steps: [
      { argv: [...node, 'enroll', ...urls, ...keys, ...ca], env, cwd: REPO_ROOT },
      { argv: [...node, 'run'], env, cwd: REPO_ROOT },
    ],
    restart_last: true,
  };
}

/**
 * Starts a long-lived helper in its own process group, outliving this process, its
 * output appended to `logFile` (0600). Returns its pid; callers watch the log for it
 * coming up (a failed exec shows there as the process never appearing).
 */
function spawnDetached(command: string, args: string[], logFile: string, what: string): number {
  const log = openSync(logFile, 'a', 0o600);
  const child = spawn(command, args, { detached: true, stdio: ['ignore', log, log], cwd: '/', env: HOST_ENV });
  closeSync(log);
  child.unref();
  child.on('error', () => undefined);
  if (child.pid === undefined) throw new Error(`could not start ${what}`);
  return child.pid;
}

function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** Resolves when the address answers with an SSH banner. */
function sshBanner(host: string, port: number, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    let buf = '';
    const done = (v: string | undefined): void => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(timeoutMs, () => done(undefined));
    s.on('data', (b: Buffer) => {
      buf += b.toString('latin1');
      const line = buf.split('\r\n')[0] ?? '';
      if (buf.includes('\n')) done(line.startsWith('SSH-') ? line : undefined);
    });
    s.on('error', () => done(undefined));
    s.on('end', () => done(undefined));
  });
}

export class LocalSandboxProvider implements ComputeProvider {
  readonly name = 'local';
  readonly baseDir: string;
  private readonly pool;
  private readonly bootTimeoutMs: number;
  private readonly overlays: readonly string[];
  private readonly agentProgram: (e: AgentEnrollment, files: AgentFiles) => GuestProgram;

  constructor(opts: LocalSandboxOptions) {
    this.baseDir = resolve(opts.baseDir);
    // Overlay mount options are comma/colon separated: keep the folder's path plain.
    if (!SAFE_PATH.test(this.baseDir)) throw new Error(`sandbox base dir must match ${SAFE_PATH.source}: ${this.baseDir}`);
    this.pool = parseCidr(opts.subnet ?? DEFAULT_SUBNET);
    if (this.pool.prefix > 30) throw new Error(`sandbox subnet ${opts.subnet ?? ''} is smaller than a /30`);
    this.bootTimeoutMs = opts.bootTimeoutMs ?? 30_000;
    this.overlays = opts.overlays ?? DEFAULT_OVERLAYS;
    for (const o of this.overlays) if (!SAFE_PATH.test(o) || o === '/') throw new Error(`bad overlay target: ${o}`);
    this.agentProgram = opts.agentProgram ?? defaultAgentProgram;
  }

  /** The sandbox's folder; refs are validated so the path stays inside baseDir. */
  dirOf(ref: string): string {
    if (!SAFE_REF.test(ref)) throw new ComputeError('invalid_request', `not a local sandbox ref: ${JSON.stringify(ref)}`);
    return join(this.baseDir, ref);
  }

  /** Deterministic from base dir and ref, so destroy finds it even without a state file. */
  netnsOf(ref: string): string {
    return `vmk-${createHash('sha256').update(`${this.baseDir}\0${ref}`).digest('hex').slice(0, 10)}`;
  }

  readState(ref: string): SandboxState | undefined {
    try {
      return JSON.parse(readFileSync(join(this.dirOf(ref), STATE_FILE), 'utf8')) as SandboxState;
    } catch {
      return undefined;
    }
  }

  private writeState(state: SandboxState): void {
    const file = join(state.dir, STATE_FILE);
    writeFileSync(`${file}.tmp`, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  }

  refFor(instanceId: string): string {
    return instanceId.toLowerCase();
  }

  create(spec: CreateVmSpec): Promise<LocalVm> {
    return this.createSandbox(spec);
  }

  /**
   * Creates a sandbox; `program` (instead of the agent derived from the spec's
   * enrollment) runs inside once sshd answers.
   */
  async createSandbox(spec: CreateVmSpec, extra: { program?: GuestProgram } = {}): Promise<LocalVm> {
    const reason = sandboxUnavailableReason();
    if (reason !== undefined) throw new ComputeError('sandbox_unavailable', `The local VM sandbox cannot run here: ${reason}.`);
    const ref = this.refFor(spec.instance_id);
    const dir = this.dirOf(ref);
    const netns = this.netnsOf(ref);
    mkdirSync(this.baseDir, { recursive: true, mode: 0o700 });
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new ComputeError('conflict', `A local sandbox for ${ref} already exists.`);
      throw err;
    }
    const state: SandboxState = {
      version: 1,
      ref,
      dir,
      netns,
      hostname: hostnameFor(spec.name),
      phase: 'creating',
      created_at: new Date().toISOString(),
      owner_pid: process.pid,
      owner_start: processStart(process.pid),
    };
    this.writeState(state);
    try {
      await must('ip', ['netns', 'add', netns], { env: HOST_ENV });
      const { block, hostIf } = await this.claimLink(netns);
      Object.assign(state, { host_if: hostIf, link_index: block.index, host_address: block.host, guest_address: block.guest });
      this.writeState(state);
      await must('ip', ['addr', 'add', `${block.host}/30`, 'dev', hostIf], { env: HOST_ENV });
      await must('ip', ['link', 'set', hostIf, 'up'], { env: HOST_ENV });
      await must('ip', ['-n', netns, 'addr', 'add', `${block.guest}/30`, 'dev', 'eth0'], { env: HOST_ENV });
      await must('ip', ['-n', netns, 'link', 'set', 'eth0', 'up'], { env: HOST_ENV });
      await must('ip', ['-n', netns, 'link', 'set', 'lo', 'up'], { env: HOST_ENV });

      const rootPassword = spec.bootstrap?.root_password ?? randomBytes(18).toString('base64url');
      const agent = spec.bootstrap?.agent;
      let program = extra.program;
      if (program === undefined && agent !== undefined) {
        // The sandbox sees the host's files under its overlays: the agent reads the CA
        // from the sandbox's folder, as a cloud VM's from /etc/vmkit/ca.pem.
        const files: AgentFiles = {};
        if (agent.ca_pem !== undefined) {
          files.caFile = join(dir, 'ca.pem');
          writeFileSync(files.caFile, agent.ca_pem, { mode: 0o644 });
        }
        program = this.agentProgram(agent, files);
      }
      const boot: BootConfig = { version: 1, hostname: state.hostname, overlays: [...this.overlays], root_password: rootPassword };
      if (program !== undefined) boot.program = program;
      const cpPort = agent === undefined ? undefined : loopbackPort(agent.control_plane_url);
      if (cpPort !== undefined) {
        await this.startHostRelay(state, block.host, cpPort);
        boot.forwards = [{ listen_host: '127.0.0.1', listen_port: cpPort, target_host: block.host, target_port: cpPort }];
      }
      writeFileSync(join(dir, BOOT_FILE), JSON.stringify(boot), { mode: 0o600 });

      await this.startSupervisor(state);
      await this.waitForSsh(state, block.guest);
      state.phase = 'running';
      this.writeState(state);
      return { ref, address: block.guest, ssh_port: 22, root_password: rootPassword, host_address: block.host, netns, dir };
    } catch (err) {
      const log = tail(join(dir, SUPERVISOR_LOG));
      await this.destroy(ref).catch(() => undefined);
      if (err instanceof ComputeError) throw err;
      const msg = err instanceof Error ? err.message : String(err);
      throw new ComputeError('provision_failed', `The local sandbox ${ref} failed to start: ${msg}${log ? `\n${log}` : ''}`);
    }
  }

  /** Lowest free /30 of the pool; the host-end link name is the atomic claim. */
  private async claimLink(netns: string): Promise<{ block: LinkBlock; hostIf: string }> {
    const used = await hostIpv4Nets();
    for (let index = 0; ; index++) {
      const block = blockAt(this.pool, index);
      if (block === undefined) break;
      if (used.some((n) => overlaps(n, block.net))) continue;
      const hostIf = `vmk${index}h`;
      // The guest end is born inside the netns: deleting the netns removes the pair.
      const r = await run('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns], { env: HOST_ENV });
      if (r.code === 0) return { block, hostIf };
      if (!/exists/i.test(r.stderr)) throw new Error(`ip link add ${hostIf} failed: ${r.stderr.trim()}`);
    }
    throw new ComputeError('provision_failed', `No free /30 is left in the sandbox pool ${this.pool.base}/${this.pool.prefix}.`);
  }

  /** Forwards <host end>:port to the host's 127.0.0.1:port (not needed when the control plane listens on all addresses). */
  private async startHostRelay(state: SandboxState, hostAddress: string, port: number): Promise<void> {
    const logFile = join(state.dir, RELAY_LOG);
    const pid = spawnDetached(process.execPath, ['--import', TSX_LOADER, RELAY, hostAddress, String(port), '127.0.0.1', String(port)], logFile, 'the control-plane relay');
    state.relay_pid = pid;
    state.relay_start = processStart(pid);
    this.writeState(state);
    for (let i = 0; i < 500; i++) {
      const text = tail(logFile);
      if (text.includes(RELAY_LISTENING) || text.includes(RELAY_NOT_NEEDED)) return;
      if (!alive(pid, state.relay_start)) break;
      await sleep(20);
    }
    throw new Error(`the control-plane relay did not start: ${tail(logFile)}`);
  }

  private async startSupervisor(state: SandboxState): Promise<void> {
    const args = ['netns', 'exec', state.netns, 'unshare', '-m', '-p', '-u', '-f', '--mount-proc', '--kill-child'];
    const supervisor = [process.execPath, '--import', TSX_LOADER, SUPERVISOR, state.dir];
    const pid = spawnDetached('ip', [...args, '/bin/sh', '-c', REAPER, 'vmkit-init', ...supervisor], join(state.dir, SUPERVISOR_LOG), 'the sandbox supervisor');
    state.supervisor_pid = pid;
    state.supervisor_start = processStart(pid);
    state.phase = 'booting';
    this.writeState(state);
    for (let i = 0; i < 100; i++) {
      const init = firstChild(pid);
      if (init !== undefined) {
        state.init_pid = init;
        state.init_start = processStart(init);
        this.writeState(state);
        return;
      }
      if (!alive(pid, undefined)) break;
      await sleep(20);
    }
    throw new Error('the sandbox supervisor did not start');
  }

  private async waitForSsh(state: SandboxState, address: string): Promise<void> {
    const deadline = Date.now() + this.bootTimeoutMs;
    while (Date.now() < deadline) {
      if (!recorded(state.init_pid, state.init_start)) throw new Error('the sandbox supervisor exited during boot');
      if ((await sshBanner(address, 22, 1000)) !== undefined) return;
      await sleep(100);
    }
    throw new Error(`sshd did not answer on ${address}:22 within ${this.bootTimeoutMs} ms`);
  }

  status(ref: string): Promise<VmStatus> {
    const dir = this.dirOf(ref);
    const state = this.readState(ref);
    const netns = state?.netns ?? this.netnsOf(ref);
    const nsExists = existsSync(`/run/netns/${netns}`);
    if (state === undefined && !nsExists && !existsSync(dir)) return Promise.resolve('missing');
    if (state?.phase === 'running' && nsExists && recorded(state.init_pid, state.init_start)) return Promise.resolve('running');
    return Promise.resolve('stopped');
  }

  /** Removes everything a sandbox made, whatever state it is in; a missing sandbox is fine. */
  async destroy(ref: string): Promise<void> {
    const dir = this.dirOf(ref);
    const state = this.readState(ref);
    const netns = state?.netns ?? this.netnsOf(ref);
    const nsPath = `/run/netns/${netns}`;

    // Killing PID 1 of the sandbox kills its whole pid namespace; anything that only
    // entered its network namespace is found by `ip netns pids`.
    for (let round = 0; round < 5; round++) {
      const pids = new Set<number>();
      if (recorded(state?.init_pid, state?.init_start)) pids.add(state.init_pid);
      if (recorded(state?.supervisor_pid, state?.supervisor_start)) pids.add(state.supervisor_pid);
      if (recorded(state?.relay_pid, state?.relay_start)) pids.add(state.relay_pid);
      if (existsSync(nsPath)) {
        const r = await run('ip', ['netns', 'pids', netns], { env: HOST_ENV });
        for (const p of r.stdout.split(/\s+/)) if (/^\d+$/.test(p)) pids.add(Number(p));
      }
      const live = [...pids].filter((p) => alive(p, undefined));
      if (live.length === 0) break;
      for (const p of live) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      for (let i = 0; i < 50 && live.some((p) => alive(p, undefined)); i++) await sleep(20);
    }

    if (existsSync(nsPath)) {
      const r = await run('ip', ['netns', 'del', netns], { env: HOST_ENV });
      if (r.code !== 0 && existsSync(nsPath)) throw new Error(`ip netns del ${netns} failed: ${r.stderr.trim()}`);
    }
    // The kernel frees a netns (and with it the veth pair) asynchronously.
    if (state?.host_if !== undefined) {
      const hostIf = state.host_if;
      const present = async (): Promise<boolean> => (await run('ip', ['link', 'show', 'dev', hostIf], { env: HOST_ENV })).code === 0;
      for (let i = 0; i < 100 && (await present()); i++) await sleep(20);
      if (await present()) await run('ip', ['link', 'del', 'dev', hostIf], { env: HOST_ENV });
    }
    // Mounts live in the sandbox's own mount namespace; this only catches strays.
    const mounts = readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((l) => (l.split(' ')[1] ?? '').replace(/\\040/g, ' '))
      .filter((m) => m === nsPath || m === dir || m.startsWith(`${dir}/`))
      .reverse();
    for (const m of mounts) await run('umount', ['-l', m], { env: HOST_ENV });
    rmSync(dir, { recursive: true, force: true });
  }

  /** Runs a program as root inside a running sandbox (all its namespaces). */
  async exec(ref: string, argv: readonly string[], opts: ExecOptions = {}): Promise<RunResult> {
    const state = this.readState(ref);
    if (!recorded(state?.init_pid, state?.init_start)) throw new ComputeError('vm_not_provisioned', `The local sandbox ${ref} is not running.`);
    if (argv.length === 0) throw new Error('exec needs a program');
    const args = ['-t', String(state.init_pid), '-m', '-u', '-p', '-n', '--', ...argv];
    const runOpts = { env: { ...HOST_ENV, HOME: '/root', ...opts.env }, timeoutMs: opts.timeoutMs ?? 60_000 };
    return run('nsenter', args, opts.input === undefined ? runOpts : { ...runOpts, input: opts.input });
  }

  /** Every sandbox with a folder under baseDir. */
  async list(): Promise<{ ref: string; status: VmStatus }[]> {
    let names: string[] = [];
    try {
      names = readdirSync(this.baseDir).filter((n) => SAFE_REF.test(n));
    } catch {
      return [];
    }
    return Promise.all(names.map(async (ref) => ({ ref, status: await this.status(ref) })));
  }

  /** Whether the process that created the sandbox is gone (a killed test run leaves such sandboxes running). */
  ownerGone(ref: string): boolean {
    const state = this.readState(ref);
    return !recorded(state?.owner_pid, state?.owner_start);
  }

  /** Destroys every sandbox under baseDir that is not running (left by a crash); returns their refs. */
  async destroyStale(): Promise<string[]> {
    const stale = (await this.list()).filter((s) => s.status !== 'running').map((s) => s.ref);
    for (const ref of stale) await this.destroy(ref);
    return stale;
  }
}

/** The provider with the default folder, `<dataDir>/sandboxes`. */
export function localProviderFor(dataDir: string, opts: Partial<LocalSandboxOptions> = {}): LocalSandboxProvider {
  if (!isAbsolute(dataDir)) dataDir = resolve(dataDir);
  return new LocalSandboxProvider({ baseDir: join(dataDir, 'sandboxes'), ...opts });
}

/**
 * Local VM sandboxes for tests: a provider on a temporary base dir, sandboxes that are
 * destroyed in t.teardown even when assertions fail, and raw SSH probes.
 *
 *   if (sandboxSkipReason) t.skip(...)  // or: t.test(name, { skip: sandboxSkipReason }, ...)
 *   const sb = await startSandbox(t, { name: 'web-1' });
 *   await sb.exec(['id', '-un']);  // as root inside, via nsenter
 *   await sshRun({ host: sb.vm.address, password: sb.vm.root_password }, 'hostname');
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { newId } from '@vmkit/protocol';
import { LocalSandboxProvider, sandboxUnavailableReason } from '../../control-plane/src/providers/compute/local.ts';
import type { ExecOptions, GuestProgram, LocalSandboxOptions, LocalVm } from '../../control-plane/src/providers/compute/local.ts';
import type { AgentEnrollment } from '../../control-plane/src/providers/compute/types.ts';
import type { RunResult } from '../../control-plane/src/providers/compute/run.ts';

/** Why sandbox tests cannot run here (printed as the skip reason), or false. */
export const sandboxSkipReason: string | false = (() => {
  const why = sandboxUnavailableReason();
  return why === undefined ? false : `local VM sandbox unavailable: ${why}`;
})();

/** What tap's `t` offers that the helper needs (keeps the helper free of tap's types). */
interface Teardownable {
  teardown(fn: () => unknown): void;
}

/** A provider on a fresh temporary base dir, removed (with its sandboxes) at teardown. */
export function sandboxProvider(t: Teardownable, opts: Partial<LocalSandboxOptions> = {}): LocalSandboxProvider {
  const baseDir = mkdtempSync(join(tmpdir(), 'vmk-sbx-'));
  const provider = new LocalSandboxProvider({ ...opts, baseDir });
  t.teardown(async () => {
    for (const s of await provider.list()) await provider.destroy(s.ref).catch(() => undefined);
    rmSync(baseDir, { recursive: true, force: true });
  });
  return provider;
}

export interface StartSandboxOptions {
  name?: string;
  /** Defaults to a fresh `inst_` id. */
  instanceId?: string;
  rootPassword?: string;
  /** Starts the repository's vmkit-agent inside with this enrollment. */
  enrollment?: AgentEnrollment;
  /** Any other program to run inside once sshd answers (log: `<dir>/program.log`). */
  program?: GuestProgram;
  /** Reuse a provider (e.g. to run two sandboxes from one base dir). */
  provider?: LocalSandboxProvider;
}

export interface TestSandbox {
  provider: LocalSandboxProvider;
  vm: LocalVm;
  exec(argv: readonly string[], opts?: ExecOptions): Promise<RunResult>;
  destroy(): Promise<void>;
}

/** Creates a sandbox that is destroyed at teardown whatever happens. */
export async function startSandbox(t: Teardownable, opts: StartSandboxOptions = {}): Promise<TestSandbox> {
  const provider = opts.provider ?? sandboxProvider(t);
  const spec = {
    instance_id: opts.instanceId ?? newId('instance'),
    name: opts.name ?? 'test-vm',
    bootstrap: {
      ...(opts.rootPassword === undefined ? {} : { root_password: opts.rootPassword }),
      ...(opts.enrollment === undefined ? {} : { agent: opts.enrollment }),
    },
  };
  t.teardown(() => provider.destroy(spec.instance_id).catch(() => undefined));
  const vm = await provider.createSandbox(spec, opts.program === undefined ? {} : { program: opts.program });
  return {
    provider,
    vm,
    exec: (argv, o) => provider.exec(vm.ref, argv, o),
    destroy: () => provider.destroy(vm.ref),
  };
}

/** The first line an SSH server sends (`SSH-2.0-OpenSSH_9.2p1 ...`), read with a raw socket. */
export function sshBanner(host: string, port = 22, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port });
    let buf = '';
    s.setTimeout(timeoutMs, () => {
      s.destroy();
      reject(new Error(`no SSH banner from ${host}:${port} within ${timeoutMs} ms`));
    });
    s.on('data', (b: Buffer) => {
      buf += b.toString('latin1');
      const end = buf.indexOf('\r\n');
      if (end >= 0) {
        s.destroy();
        resolve(buf.slice(0, end));
      }
    });
    s.on('error', reject);
  });
}

export interface SshTarget {
  host: string;
  port?: number;
  username?: string;
  password?: string;
  privateKey?: string | Buffer;
}

export interface SshRunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Logs in with the ssh2 client (password and/or key, nothing else offered) and runs
 * one command. Rejects with the client's error when authentication fails.
 */
export function sshRun(target: SshTarget, command: string, timeoutMs = 15_000): Promise<SshRunResult> {
  return new Promise((resolve, reject) => {
    const conn = new ssh2.Client();
    const timer = setTimeout(() => {
      conn.end();
      reject(new Error(`ssh to ${target.host} timed out`));
    }, timeoutMs);
    const fail = (err: Error): void => {
      clearTimeout(timer);
      conn.end();
      reject(err);
    };
    conn.on('error', fail);
    conn.on('ready', () => {
      conn.exec(command, (err, stream) => {
        if (err) return fail(err);
        let stdout = '';
        let stderr = '';
        let code: number | null = null;
        stream.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
        stream.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
        stream.on('exit', (c: number | null) => (code = c));
        stream.on('close', () => {
          clearTimeout(timer);
          conn.end();
          resolve({ code, stdout, stderr });
        });
      });
    });
    conn.connect({
      host: target.host,
      port: target.port ?? 22,
      username: target.username ?? 'root',
      ...(target.password === undefined ? {} : { password: target.password }),
      ...(target.privateKey === undefined ? {} : { privateKey: target.privateKey }),
      tryKeyboard: false,
      readyTimeout: timeoutMs,
      // Sandboxes make fresh host keys each time; the tests pin nothing.
      hostVerifier: () => true,
    });
  });
}

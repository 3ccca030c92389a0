/**
 * The `vmkit` CLI run in-process with its output captured, against a chosen server and key,
 * with a config directory of its own (never the machine's saved login), removed at teardown.
 *
 *   const vmkit = vmkitCli(t, () => ({ url: cp.url, key: cp.adminKey }));
 *   const { code, stdout, stderr } = await vmkit(['instances', 'list']);
 *   await vmkit(['keys', 'list'], { VMKIT_API_KEY: 'vmk_other' });   // env on top
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runVmkitCli } from '../../control-plane/src/cli/vmkit.ts';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** One run with exactly this environment (and stdin, for `vmkit login`). */
export async function runVmkit(args: string[], env: NodeJS.ProcessEnv, stdin?: NodeJS.ReadableStream): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const code = await runVmkitCli(args, {
    stdout: (s) => (stdout += s),
    stderr: (s) => (stderr += s),
    env,
    ...(stdin === undefined ? {} : { stdin }),
  });
  return { code, stdout, stderr };
}

export type VmkitCli = ((args: string[], env?: NodeJS.ProcessEnv) => Promise<CliRun>) & { configHome: string };

/**
 * A runner for one server. `target` is asked at every run, so a control plane restarted
 * on another port is followed.
 */
export function vmkitCli(t: { teardown(fn: () => unknown): void }, target: () => { url: string; key: string }): VmkitCli {
  const configHome = mkdtempSync(join(tmpdir(), 'vmkit-config-'));
  t.teardown(() => rmSync(configHome, { recursive: true, force: true }));
  const run = (args: string[], env: NodeJS.ProcessEnv = {}) => {
    const { url, key } = target();
    return runVmkit(args, { VMKIT_URL: url, VMKIT_API_KEY: key, XDG_CONFIG_HOME: configHome, ...env });
  };
  return Object.assign(run, { configHome });
}

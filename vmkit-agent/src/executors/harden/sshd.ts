/** The real sshd as the judge: `sshd -t` validates, `sshd -T -C ...` prints effective values. */
import { tail } from './exec.ts';
import type { ExecFn } from './exec.ts';
import { parseEffective } from './lockout.ts';
import { HARDENED } from './sshd-plan.ts';
import type { EffectiveConfig } from './types.ts';

export interface SshdTool {
  exec: ExecFn;
  binary: string;
  /** Extra arguments for every call (tests pass `-h <hostkey>`). */
  extraArgs: readonly string[];
  config: string;
}

/** The connection specs the effective check uses, so Match blocks count. */
export function connectionSpec(user: string): string {
  return `user=${user},host=localhost,addr=127.0.0.1,laddr=127.0.0.1,lport=22`;
}

export async function validate(tool: SshdTool): Promise<{ ok: true } | { ok: false; message: string }> {
  const r = await tool.exec(tool.binary, ['-t', '-f', tool.config, ...tool.extraArgs]);
  return r.code === 0 ? { ok: true } : { ok: false, message: tail(r.stderr || r.stdout) || `sshd -t exited ${String(r.code)}` };
}

export async function effective(tool: SshdTool, user: string): Promise<{ ok: true; config: EffectiveConfig } | { ok: false; message: string }> {
  const r = await tool.exec(tool.binary, ['-T', '-f', tool.config, ...tool.extraArgs, '-C', connectionSpec(user)]);
  if (r.code !== 0) return { ok: false, message: tail(r.stderr || r.stdout) || `sshd -T exited ${String(r.code)}` };
  return { ok: true, config: parseEffective(r.stdout) };
}

/** The hardened keywords whose effective value is wrong, as "keyword value" strings. */
export function wrongValues(config: EffectiveConfig): string[] {
  const wrong: string[] = [];
  for (const [k, want] of Object.entries(HARDENED)) {
    const got = (config.get(k) ?? [])[0];
    if (got !== want) wrong.push(`${k} ${got ?? '(not printed)'}`);
  }
  return wrong;
}

/** Checks the effective values for each user; returns the failures, empty when all hold. */
export async function checkEffective(tool: SshdTool, users: readonly string[]): Promise<string[]> {
  const failures: string[] = [];
  for (const user of users) {
    const r = await effective(tool, user);
    if (!r.ok) failures.push(`sshd -T for user=${user} failed: ${r.message}`);
    else {
      const wrong = wrongValues(r.config);
      if (wrong.length > 0) failures.push(`for user=${user}: ${wrong.join(', ')}`);
    }
  }
  return failures;
}

/** The real sshd as the judge: `sshd -t` validates, `sshd -T -C ...` prints effective values. */
import { tail } from './exec.ts';
import type { ExecFn } from './exec.ts';
import { readFile } from 'node:fs/promises';
import { parseEffective } from './lockout.ts';
import { BASE_RULES, hostKeyType } from './ssh-policy.ts';
import type { PolicyRule } from './ssh-policy.ts';
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

/** The rules whose effective value is wrong, as "keyword value" strings. */
export function wrongValues(config: EffectiveConfig, rules: readonly PolicyRule[] = BASE_RULES): string[] {
  const wrong: string[] = [];
  for (const rule of rules) {
    const got = (config.get(rule.keyword) ?? [])[0];
    if (got === undefined || !rule.holds(got)) wrong.push(`${rule.keyword} ${got ?? '(not printed)'}`);
  }
  return wrong;
}

/** Which signature algorithms a host key of each type can serve. */
const SERVES: Readonly<Record<string, (alg: string) => boolean>> = {
  'ssh-ed25519': (a) => a === 'ssh-ed25519',
  'ssh-rsa': (a) => a === 'rsa-sha2-256' || a === 'rsa-sha2-512',
};

/**
 * Null when sshd has a host key it may still offer under its HostKeyAlgorithms,
 * otherwise why not: a client could not even start a connection.
 */
export async function hostKeyProblem(config: EffectiveConfig): Promise<string | null> {
  const algorithms = ((config.get('hostkeyalgorithms') ?? [])[0] ?? '').split(',');
  const paths = config.get('hostkey') ?? [];
  const types: string[] = [];
  for (const path of paths) {
    const content = await readFile(path, 'utf8').catch(() => null);
    const type = content === null ? null : hostKeyType(content);
    if (type && algorithms.some((a) => SERVES[type]?.(a) ?? false)) return null;
    types.push(`${path}: ${type ?? 'unreadable'}`);
  }
  return `no host key sshd may offer under HostKeyAlgorithms ${algorithms.join(',') || '(none)'} (host keys: ${types.join(', ') || 'none'}); add an Ed25519 or RSA host key, or harden without the SSH policy`;
}

/** Checks the effective values for each user; returns the failures, empty when all hold. */
export async function checkEffective(tool: SshdTool, users: readonly string[], rules: readonly PolicyRule[] = BASE_RULES): Promise<string[]> {
  const failures: string[] = [];
  let hostKeysChecked = !rules.some((r) => r.keyword === 'hostkeyalgorithms');
  for (const user of users) {
    const r = await effective(tool, user);
    if (!r.ok) failures.push(`sshd -T for user=${user} failed: ${r.message}`);
    else {
      const wrong = wrongValues(r.config, rules);
      if (wrong.length > 0) failures.push(`for user=${user}: ${wrong.join(', ')}`);
      if (!hostKeysChecked) {
        hostKeysChecked = true;
        const problem = await hostKeyProblem(r.config);
        if (problem) failures.push(problem);
      }
    }
  }
  return failures;
}

/**
 * The lockout guard: after hardening root cannot log in over SSH and nobody can use a
 * password, so kamal with a key must work. These checks mirror sshd's own
 * (auth.c allowed_user, auth2-pubkey.c) on the effective configuration for user=kamal.
 */
import { posix } from 'node:path';
import type { EffectiveConfig } from './types.ts';

/** sshd's match_pattern: `*` and `?` wildcards, case-sensitive for user names. */
function wildcard(pattern: string, value: string): boolean {
  const re = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp('^' + re + '$').test(value);
}

/** A comma-separated pattern list where `!pattern` negates (match_pattern_list). */
function matchList(list: string, value: string): boolean {
  let matched = false;
  for (const raw of list.split(',')) {
    const negated = raw.startsWith('!');
    const p = negated ? raw.slice(1) : raw;
    if (wildcard(p, value)) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

/** AllowUsers/DenyUsers entries may be `user@host`; the user part decides here. */
function userPart(entry: string): string {
  const at = entry.indexOf('@');
  return at === -1 ? entry : entry.slice(0, at);
}

function values(cfg: EffectiveConfig, keyword: string): string[] {
  return (cfg.get(keyword) ?? []).flatMap((v) => v.split(/\s+/)).filter((v) => v !== '' && v !== 'none');
}

export interface LockoutInput {
  user: string;
  /** The home sshd will see for the user (from passwd, after the plan). */
  home: string;
  /** Groups the user will be in after the plan. */
  groups: readonly string[];
  shellUsable: boolean;
  /** Valid keys in authorized_keys after the plan. */
  keysAfter: number;
  effective: EffectiveConfig | null;
}

/** The reason nobody could log in after hardening, or null when kamal can. */
export function lockoutReason(input: LockoutInput): string | null {
  if (input.keysAfter === 0) {
    return `no deploy key was given and ${input.user} has no valid key in authorized_keys, so nobody could log in once root login and passwords are off`;
  }
  if (!input.shellUsable) return `the login shell for ${input.user} (/bin/bash) is missing or not executable; sshd refuses users without a usable shell`;
  const cfg = input.effective;
  if (!cfg) return null;
  const u = input.user;
  const deny = values(cfg, 'denyusers').filter((e) => wildcard(userPart(e), u));
  if (deny.length > 0) return `sshd's DenyUsers (${deny.join(' ')}) rejects ${u}`;
  const allow = values(cfg, 'allowusers');
  if (allow.length > 0 && !allow.some((e) => wildcard(userPart(e), u))) {
    return `sshd's AllowUsers (${allow.join(' ')}) does not include ${u}`;
  }
  const denyGroups = values(cfg, 'denygroups').filter((p) => input.groups.some((g) => matchList(p, g)));
  if (denyGroups.length > 0) return `sshd's DenyGroups (${denyGroups.join(' ')}) rejects a group of ${u}`;
  const allowGroups = values(cfg, 'allowgroups');
  if (allowGroups.length > 0 && !allowGroups.some((p) => input.groups.some((g) => matchList(p, g)))) {
    return `sshd's AllowGroups (${allowGroups.join(' ')}) includes none of ${u}'s groups (${input.groups.join(', ')})`;
  }
  const pubkey = (cfg.get('pubkeyauthentication') ?? [])[0];
  if (pubkey === 'no') return `sshd has PubkeyAuthentication no for ${u}, so the deploy key could not be used`;
  const methods = (cfg.get('authenticationmethods') ?? [])[0];
  if (methods !== undefined && methods !== 'any' && !methods.split(/\s+/).some((m) => m === 'publickey')) {
    return `sshd's AuthenticationMethods (${methods}) has no publickey-only path for ${u}`;
  }
  const files = values(cfg, 'authorizedkeysfile');
  const target = posix.join(input.home, '.ssh/authorized_keys');
  const covered = files.some((f) => {
    const expanded = f.replace(/%%/g, '\0').replace(/%h/g, input.home).replace(/%[uU]/g, u).replace(/\0/g, '%');
    const abs = expanded.startsWith('~/') ? posix.join(input.home, expanded.slice(2)) : posix.isAbsolute(expanded) ? expanded : posix.join(input.home, expanded);
    return posix.normalize(abs) === target;
  });
  if (!covered) {
    return `sshd's AuthorizedKeysFile (${files.join(' ') || 'none'}) does not cover ${target}`;
  }
  return null;
}

/** Parses `sshd -T` output into keyword → values. */
export function parseEffective(output: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const line of output.split('\n')) {
    const m = /^(\S+)\s+(.*)$/.exec(line.trim());
    if (!m) continue;
    const key = (m[1] ?? '').toLowerCase();
    map.set(key, [...(map.get(key) ?? []), m[2] ?? '']);
  }
  return map;
}

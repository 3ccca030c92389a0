import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** What `vmkit login` keeps: the key only ever goes to the URL it was checked against. */
export interface SavedLogin {
  url: string;
  key: string;
}

/** `$XDG_CONFIG_HOME/vmkit/credentials.json`, else `~/.config/vmkit/credentials.json`. */
export function credentialsFile(env: NodeJS.ProcessEnv): string {
  const base = env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config');
  return join(base, 'vmkit', 'credentials.json');
}

export function readLogin(env: NodeJS.ProcessEnv): SavedLogin | null {
  let text: string;
  try {
    text = readFileSync(credentialsFile(env), 'utf8');
  } catch {
    return null;
  }
  try {
    const v = JSON.parse(text) as Partial<SavedLogin>;
    return typeof v.url === 'string' && typeof v.key === 'string' ? { url: v.url, key: v.key } : null;
  } catch {
    return null;
  }
}

export function saveLogin(env: NodeJS.ProcessEnv, login: SavedLogin): string {
  const file = credentialsFile(env);
  const dir = join(file, '..');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // An existing directory keeps its mode from mkdir; the secret's directory is ours alone.
  chmodSync(dir, 0o700);
  // Written 0600 from the start (mode applies on create) and forced for an older file.
  writeFileSync(file, `${JSON.stringify(login, null, 2)}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return file;
}

export function removeLogin(env: NodeJS.ProcessEnv): { path: string; removed: boolean } {
  const path = credentialsFile(env);
  try {
    rmSync(path);
    return { path, removed: true };
  } catch {
    return { path, removed: false };
  }
}

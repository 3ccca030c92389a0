import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { join } from 'node:path';

/** A host as it stands in a URL (an IPv6 address in brackets). */
export function hostForUrl(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

/** `http://<host>:<port>` of a server that listens (port 0 resolved), else undefined. */
export function listeningUrl(server: Server, host: string): string | undefined {
  const address = server.address();
  return typeof address === 'object' && address ? `http://${hostForUrl(host)}:${address.port}` : undefined;
}

/** Where a running server notes the URL it serves, for offline commands on the same data directory. */
export const SERVER_URL_FILE = 'server-url.json';

interface Noted {
  public_url: string;
  pid: number;
}

/** Written once the server listens (port 0 included); removed when it closes. */
export function noteServerUrl(dataDir: string, publicUrl: string): void {
  const file = join(dataDir, SERVER_URL_FILE);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ public_url: publicUrl, pid: process.pid } satisfies Noted)}\n`, { mode: 0o600 });
  renameSync(tmp, file);
}

export function forgetServerUrl(dataDir: string): void {
  rmSync(join(dataDir, SERVER_URL_FILE), { force: true });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The URL of the server running on this data directory, or null when none is (or it died without cleaning up). */
export function runningServerUrl(dataDir: string): string | null {
  let noted: Partial<Noted>;
  try {
    noted = JSON.parse(readFileSync(join(dataDir, SERVER_URL_FILE), 'utf8')) as Partial<Noted>;
  } catch {
    return null;
  }
  if (typeof noted.public_url !== 'string' || typeof noted.pid !== 'number' || !alive(noted.pid)) return null;
  return noted.public_url;
}

import { execFile } from '../child-process.ts';
import { access, readFile, stat } from 'node:fs/promises';
import { constants } from 'node:fs';
import { arch, hostname, release } from 'node:os';
import { delimiter, join } from 'node:path';
import type { ExecutorSpec } from './types.ts';

/** Where facts are read from; tests point these at fixtures. */
export interface FactSources {
  osReleaseFiles: string[];
  passwdFile: string;
  groupFile: string;
  dockerSocket: string;
  sshdCandidates: string[];
  path: string;
}

export const HOST_SOURCES: FactSources = {
  osReleaseFiles: ['/etc/os-release', '/usr/lib/os-release'],
  passwdFile: '/etc/passwd',
  groupFile: '/etc/group',
  dockerSocket: '/var/run/docker.sock',
  // systemd gives services /usr/sbin on PATH, a login shell of a normal user may not.
  sshdCandidates: ['/usr/sbin/sshd', '/usr/local/sbin/sshd', '/sbin/sshd'],
  path: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
};

const USERS_OF_INTEREST = ['root', 'kamal'] as const;
const OS_RELEASE_FIELDS = ['ID', 'ID_LIKE', 'NAME', 'PRETTY_NAME', 'VERSION_ID', 'VERSION_CODENAME'] as const;

/** Parses os-release(5): KEY=value lines, values optionally quoted. */
export function parseOsRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!m?.[1] || m[2] === undefined) continue;
    let value = m[2];
    if (/^(".*"|'.*')$/.test(value)) value = value.slice(1, -1).replace(/\\(["'$`\\])/g, '$1');
    out[m[1]] = value;
  }
  return out;
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 7 || !f[0]) continue;
    out.push({ name: f[0], uid: Number(f[2]), gid: Number(f[3]), home: f[5] ?? '', shell: f[6] ?? '' });
  }
  return out;
}

interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 4 || !f[0]) continue;
    out.push({ name: f[0], gid: Number(f[2]), members: (f[3] ?? '').split(',').filter((m) => m.length > 0) });
  }
  return out;
}

async function readFirst(files: string[]): Promise<string | undefined> {
  for (const f of files) {
    try {
      return await readFile(f, 'utf8');
    } catch {
      // try the next one
    }
  }
  return undefined;
}

async function isExecutable(file: string): Promise<boolean> {
  try {
    await access(file, constants.X_OK);
    return (await stat(file)).isFile();
  } catch {
    return false;
  }
}

async function which(name: string, path: string): Promise<string | undefined> {
  for (const dir of path.split(delimiter)) {
    if (dir && (await isExecutable(join(dir, name)))) return join(dir, name);
  }
  return undefined;
}

/** `sshd -V` prints its version on stderr; older builds exit 1 with usage, still naming it. */
function sshdVersion(binary: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile(binary, ['-V'], { timeout: 5000, maxBuffer: 64 * 1024 }, (_err, stdout, stderr) => {
      const m = /OpenSSH_[^\s,]+/.exec(`${stderr}\n${stdout}`);
      resolve(m?.[0]);
    });
  });
}

export async function collectFacts(src: FactSources = HOST_SOURCES): Promise<Record<string, unknown>> {
  const osText = await readFirst(src.osReleaseFiles);
  const osFields = osText === undefined ? {} : parseOsRelease(osText);
  const osRelease = Object.fromEntries(OS_RELEASE_FIELDS.filter((k) => osFields[k] !== undefined).map((k) => [k.toLowerCase(), osFields[k]]));

  let sshdPath: string | undefined;
  for (const c of src.sshdCandidates) {
    if (await isExecutable(c)) {
      sshdPath = c;
      break;
    }
  }
  sshdPath ??= await which('sshd', src.path);
  const sshd = sshdPath === undefined ? { present: false } : { present: true, path: sshdPath, version: (await sshdVersion(sshdPath)) ?? null };

  const dockerBinary = await which('docker', src.path);
  let socket = false;
  try {
    socket = (await stat(src.dockerSocket)).isSocket();
  } catch {
    socket = false;
  }

  const passwd = parsePasswd((await readFirst([src.passwdFile])) ?? '');
  const groups = parseGroup((await readFirst([src.groupFile])) ?? '');
  const users: Record<string, unknown> = {};
  for (const name of USERS_OF_INTEREST) {
    const entry = passwd.find((p) => p.name === name);
    if (!entry) {
      users[name] = { exists: false };
      continue;
    }
    const primary = groups.find((g) => g.gid === entry.gid)?.name;
    const supplementary = groups.filter((g) => g.members.includes(name)).map((g) => g.name);
    users[name] = {
      exists: true,
      uid: entry.uid,
      gid: entry.gid,
      home: entry.home,
      shell: entry.shell,
      groups: [...new Set([...(primary ? [primary] : []), ...supplementary])],
    };
  }
  const dockerGroup = groups.find((g) => g.name === 'docker');

  return {
    hostname: hostname(),
    os_release: osRelease,
    kernel: release(),
    arch: arch(),
    sshd,
    docker: {
      binary: dockerBinary ?? null,
      socket,
      group: dockerGroup ? { gid: dockerGroup.gid, members: dockerGroup.members } : null,
    },
    users,
  };
}

export const factsExecutor: ExecutorSpec<'facts'> = {
  exclusive: false,
  run: async (_params, ctx) => {
    ctx.progress('collect', 'started');
    const output = await collectFacts();
    ctx.progress('collect', 'done');
    return { status: 'succeeded', output };
  },
};

/** /etc/passwd, /etc/group and /etc/shadow entries, parsed (no I/O). */

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

export function parsePasswd(content: string | null): PasswdEntry[] {
  if (content === null) return [];
  const out: PasswdEntry[] = [];
  for (const line of content.split('\n')) {
    const f = line.replace(/\r$/, '').split(':');
    if (f.length < 7 || f[0] === '' || (f[0] ?? '').startsWith('#')) continue;
    out.push({ name: f[0] ?? '', uid: Number(f[2]), gid: Number(f[3]), home: f[5] ?? '', shell: f[6] ?? '' });
  }
  return out;
}

export function parseGroup(content: string | null): GroupEntry[] {
  if (content === null) return [];
  const out: GroupEntry[] = [];
  for (const line of content.split('\n')) {
    const f = line.replace(/\r$/, '').split(':');
    if (f.length < 4 || f[0] === '' || (f[0] ?? '').startsWith('#')) continue;
    out.push({ name: f[0] ?? '', gid: Number(f[2]), members: (f[3] ?? '').split(',').filter((m) => m !== '') });
  }
  return out;
}

/** The password field of a user in /etc/shadow, or null when unknown. */
export function shadowPassword(content: string | null, user: string): string | null {
  if (content === null) return null;
  for (const line of content.split('\n')) {
    const f = line.split(':');
    if (f[0] === user) return f[1] ?? '';
  }
  return null;
}

/** Names of every group a user belongs to: primary and supplementary. */
export function groupsOf(user: PasswdEntry | undefined, groups: readonly GroupEntry[]): string[] {
  if (!user) return [];
  const names = new Set<string>();
  for (const g of groups) {
    if (g.gid === user.gid || g.members.includes(user.name)) names.add(g.name);
  }
  return [...names];
}

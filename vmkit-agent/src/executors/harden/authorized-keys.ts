/** authorized_keys contents (sshd's AUTHORIZED_KEYS FILE FORMAT), parsed and merged without I/O. */

const KEY_TYPES = new Set([
  'ssh-ed25519',
  'ssh-rsa',
  'ssh-dss',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
]);

export interface ParsedKey {
  type: string;
  blob: string;
}

/** Splits on whitespace outside double quotes (options may quote spaces). */
function tokens(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (const c of line) {
    if (c === '"') quoted = !quoted;
    if (!quoted && (c === ' ' || c === '\t')) {
      if (cur !== '') out.push(cur);
      cur = '';
    } else cur += c;
  }
  if (cur !== '') out.push(cur);
  return out;
}

/** The key of one authorized_keys line (options allowed before it), or null. */
export function parseKeyLine(line: string): ParsedKey | null {
  const text = line.trim();
  if (text === '' || text.startsWith('#')) return null;
  const t = tokens(text);
  for (const i of [0, 1]) {
    const type = t[i];
    const blob = t[i + 1];
    if (type !== undefined && blob !== undefined && KEY_TYPES.has(type) && /^[A-Za-z0-9+/]+={0,3}$/.test(blob)) {
      if (validBlob(type, blob)) return { type, blob };
    }
  }
  return null;
}

/** The blob starts with its own key type as an SSH string, which catches pasted garbage. */
function validBlob(type: string, blob: string): boolean {
  const raw = Buffer.from(blob, 'base64');
  if (raw.length < 4) return false;
  const len = raw.readUInt32BE(0);
  return len === type.length && raw.subarray(4, 4 + len).toString('latin1') === type;
}

export function keyId(k: ParsedKey): string {
  return `${k.type} ${k.blob}`;
}

export interface KeyMerge {
  content: string;
  /** Valid keys already present. */
  existing: number;
  /** Deploy keys appended. */
  added: number;
  /** Deploy keys that were given but are not valid keys. */
  rejected: number;
  /** Valid keys in the result. */
  total: number;
}

/** Keeps every existing line as it is and appends the deploy keys that are missing. */
export function mergeAuthorizedKeys(existing: string | null, deployKeys: readonly string[]): KeyMerge {
  const before = existing ?? '';
  const present = new Set<string>();
  for (const line of before.split('\n')) {
    const k = parseKeyLine(line);
    if (k) present.add(keyId(k));
  }
  const existingCount = present.size;
  const additions: string[] = [];
  let rejected = 0;
  for (const line of deployKeys) {
    const k = parseKeyLine(line);
    if (!k) {
      rejected++;
      continue;
    }
    if (present.has(keyId(k))) continue;
    present.add(keyId(k));
    additions.push(line.trim());
  }
  let content = before;
  if (additions.length > 0) {
    if (content !== '' && !content.endsWith('\n')) content += '\n';
    content += additions.map((l) => l + '\n').join('');
  }
  return { content, existing: existingCount, added: additions.length, rejected, total: present.size };
}

/**
 * What the hardened sshd must say, as rules the planner writes and `sshd -T` checks.
 *
 * Always: no root login, no passwords, no keyboard-interactive auth.
 * With the SSH policy (on unless the caller opts out): modern key exchange, ciphers,
 * MACs and host-key algorithms, X11 and agent forwarding off, MaxAuthTries 3 and
 * LoginGraceTime 30. Kamal must still get in: it speaks SSH through Ruby's net-ssh,
 * which without the x25519 gem offers only ecdh-sha2-nistp*, diffie-hellman-group-
 * exchange-sha256 and diffie-hellman-group14-*, aes*-ctr ciphers and hmac-sha2-*-etm
 * MACs. So group-exchange stays (with /etc/ssh/moduli cut to 3072 bits and up), the
 * -ctr ciphers stay, and TCP forwarding is left alone (Kamal 2's local registry
 * reaches the VM through an SSH tunnel).
 *
 * The algorithm lists use sshd's `-` form: remove these from the compiled-in default.
 * That works on every OpenSSH since 7.5, whichever algorithms a release knows, so a
 * list never names one the VM's sshd cannot parse (sntrup761 needs 8.5, for one).
 */

export interface PolicyRule {
  /** Lower-cased, as `sshd -T` prints it. */
  keyword: string;
  /** The line as written into the managed settings. */
  line: string;
  /** Whether a value found in the configuration files is as strict as the rule. */
  accepts(value: string): boolean;
  /** Whether the value `sshd -T` prints for a connection satisfies the rule. */
  holds(effective: string): boolean;
}

const is = (want: string) => (v: string) => v.toLowerCase() === want;

/** sshd's match_pattern: `*` and `?` wildcards. */
function wildcard(pattern: string, value: string): boolean {
  const re = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp('^' + re + '$').test(value);
}

/** An algorithm list rule: what we write removes `denied`; sshd -T must print a non-empty list without them. */
function algorithms(directive: string, denied: readonly string[]): PolicyRule {
  const value = '-' + denied.join(',');
  return {
    keyword: directive.toLowerCase(),
    line: `${directive} ${value}`,
    accepts: (v) => v === value,
    holds: (effective) => {
      const list = effective.split(',').filter((a) => a !== '');
      return list.length > 0 && !list.some((a) => denied.some((p) => wildcard(p, a)));
    },
  };
}

/** sshd's convtime: `90`, `30s`, `1m30s`; null when it is not a time. */
export function seconds(value: string): number | null {
  if (/^\d+$/.test(value)) return Number(value);
  let total = 0;
  const re = /(\d+)([sSmMhHdDwW])/gy;
  let m: RegExpExecArray | null;
  let end = 0;
  while ((m = re.exec(value)) !== null) {
    const mult = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 }[(m[2] ?? 's').toLowerCase() as 's'];
    total += Number(m[1]) * mult;
    end = re.lastIndex;
  }
  return end === value.length && end > 0 ? total : null;
}

const atMost = (limit: number, read: (v: string) => number | null) => (v: string) => {
  const n = read(v);
  return n !== null && n >= 1 && n <= limit;
};
const integer = (v: string) => (/^\d+$/.test(v) ? Number(v) : null);

export const MAX_AUTH_TRIES = 3;
export const LOGIN_GRACE_SECONDS = 30;
/** /etc/ssh/moduli keeps group-exchange primes of at least this many bits. */
export const MIN_MODULUS_BITS = 3072;

/** Key exchange without the NIST curves and SHA-1; group-exchange-sha256 stays for net-ssh. */
export const DENIED_KEX = ['ecdh-sha2-*', 'diffie-hellman-group1-sha1', 'diffie-hellman-group14-sha1', 'diffie-hellman-group-exchange-sha1'];
/** No CBC or 3DES (not in today's defaults; denied in case a vendor's are older). */
export const DENIED_CIPHERS = ['3des-cbc', 'aes128-cbc', 'aes192-cbc', 'aes256-cbc', 'rijndael-cbc@lysator.liu.se', 'arcfour*', 'blowfish-cbc', 'cast128-cbc'];
/** Encrypt-then-MAC with SHA-2 or UMAC-128 only: no SHA-1, MD5, 64-bit tags or MAC-then-encrypt. */
export const DENIED_MACS = ['*sha1*', '*md5*', 'umac-64*', 'umac-128@openssh.com', 'hmac-sha2-256', 'hmac-sha2-512', 'hmac-ripemd160*'];
/** Ed25519 and RSA with SHA-2 only: no ECDSA (NIST curves) and no ssh-rsa (SHA-1) host keys. */
export const DENIED_HOST_KEY_ALGORITHMS = ['ecdsa-sha2-*', 'sk-ecdsa-sha2-*', 'ssh-rsa', 'ssh-rsa-cert-v01@openssh.com', 'ssh-dss*'];

export const BASE_RULES: readonly PolicyRule[] = [
  { keyword: 'permitrootlogin', line: 'PermitRootLogin no', accepts: is('no'), holds: is('no') },
  { keyword: 'passwordauthentication', line: 'PasswordAuthentication no', accepts: is('no'), holds: is('no') },
  { keyword: 'kbdinteractiveauthentication', line: 'KbdInteractiveAuthentication no', accepts: is('no'), holds: is('no') },
];

export const POLICY_RULES: readonly PolicyRule[] = [
  algorithms('KexAlgorithms', DENIED_KEX),
  algorithms('Ciphers', DENIED_CIPHERS),
  algorithms('MACs', DENIED_MACS),
  algorithms('HostKeyAlgorithms', DENIED_HOST_KEY_ALGORITHMS),
  { keyword: 'x11forwarding', line: 'X11Forwarding no', accepts: is('no'), holds: is('no') },
  { keyword: 'allowagentforwarding', line: 'AllowAgentForwarding no', accepts: is('no'), holds: is('no') },
  { keyword: 'maxauthtries', line: `MaxAuthTries ${MAX_AUTH_TRIES}`, accepts: atMost(MAX_AUTH_TRIES, integer), holds: atMost(MAX_AUTH_TRIES, integer) },
  { keyword: 'logingracetime', line: `LoginGraceTime ${LOGIN_GRACE_SECONDS}`, accepts: atMost(LOGIN_GRACE_SECONDS, seconds), holds: atMost(LOGIN_GRACE_SECONDS, seconds) },
];

export function rulesFor(sshPolicy: boolean): readonly PolicyRule[] {
  return sshPolicy ? [...BASE_RULES, ...POLICY_RULES] : BASE_RULES;
}

/**
 * /etc/ssh/moduli without the group-exchange primes under MIN_MODULUS_BITS. Its size
 * column is the prime's bit length minus one (3071 for a 3072-bit prime). Comments and
 * lines it cannot read are kept as they are. Null when nothing would be left to offer
 * (sshd would fall back to its built-in groups; better to keep the file as it is).
 */
export function strongModuli(content: string): { content: string; kept: number; dropped: number } | null {
  const lines = content.split(/(?<=\n)/);
  let kept = 0;
  let dropped = 0;
  const out = lines.filter((line) => {
    const fields = line.trim().split(/\s+/);
    if (line.trim().startsWith('#') || fields.length < 7) return true;
    const size = Number(fields[4]);
    if (!Number.isInteger(size)) return true;
    if (size + 1 >= MIN_MODULUS_BITS) {
      kept += 1;
      return true;
    }
    dropped += 1;
    return false;
  });
  return kept === 0 ? null : { content: out.join(''), kept, dropped };
}

/** The host key types a hardened sshd can still offer (HostKeyAlgorithms keeps ed25519 and RSA). */
export const USABLE_HOST_KEY_TYPES = ['ssh-ed25519', 'ssh-rsa'] as const;

/**
 * The key type of a host key file's contents (private key or .pub line), or null.
 * OpenSSH's private key format holds the public key blob in the clear; PEM files name
 * their type in the armour.
 */
export function hostKeyType(content: string): string | null {
  const pub = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+|ssh-dss|sk-\S+) /.exec(content);
  if (pub) return pub[1] ?? null;
  if (/-----BEGIN RSA PRIVATE KEY-----/.test(content)) return 'ssh-rsa';
  if (/-----BEGIN EC PRIVATE KEY-----/.test(content)) return 'ecdsa-sha2-nistp256';
  if (/-----BEGIN DSA PRIVATE KEY-----/.test(content)) return 'ssh-dss';
  const body = /-----BEGIN OPENSSH PRIVATE KEY-----([\s\S]*?)-----END OPENSSH PRIVATE KEY-----/.exec(content)?.[1];
  if (!body) return null;
  const bin = Buffer.from(body.replace(/\s+/g, ''), 'base64');
  const magic = 'openssh-key-v1\0';
  if (bin.subarray(0, magic.length).toString('latin1') !== magic) return null;
  let at = magic.length;
  const str = (): Buffer | null => {
    if (at + 4 > bin.length) return null;
    const len = bin.readUInt32BE(at);
    at += 4;
    if (at + len > bin.length) return null;
    const s = bin.subarray(at, at + len);
    at += len;
    return s;
  };
  for (let i = 0; i < 3; i++) if (str() === null) return null; // cipher, kdf, kdf options
  at += 4; // number of keys
  const blob = str();
  if (!blob || blob.length < 4) return null;
  const len = blob.readUInt32BE(0);
  return blob.subarray(4, 4 + len).toString('latin1') || null;
}

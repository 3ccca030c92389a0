import { BlockList, isIP } from 'node:net';

/**
 * Plain ws:// (and http:// for enrollment) is allowed only towards addresses that
 * never leave the machine or its own link, written as IP literals so DNS cannot
 * redirect them: loopback and link-local. A local sandbox VM dials the control plane
 * at its own loopback (the sandbox relays it over its link). Private ranges are NOT
 * local: a cloud VPC carries other tenants' and operators' traffic, so a control plane
 * at 10.x needs TLS too, or an explicit --insecure that the agent warns about.
 */
const LOCAL = new BlockList();
LOCAL.addSubnet('127.0.0.0', 8, 'ipv4');
LOCAL.addSubnet('169.254.0.0', 16, 'ipv4');
LOCAL.addAddress('::1', 'ipv6');
LOCAL.addSubnet('fe80::', 10, 'ipv6');

export function isLocalHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '');
  if (host === 'localhost') return true;
  const family = isIP(host);
  if (family === 0) return false;
  return LOCAL.check(host, family === 4 ? 'ipv4' : 'ipv6');
}

export type TransportCheck = { ok: true; plain: boolean; url: URL } | { ok: false; reason: string };

/** Checks a control-plane URL: `kind` http for enrollment, ws for the agent connection. */
export function checkTransport(raw: string, kind: 'http' | 'ws', insecure: boolean): TransportCheck {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { ok: false, reason: `${JSON.stringify(raw)} is not a URL` };
  }
  const secure = kind === 'http' ? 'https:' : 'wss:';
  const plain = kind === 'http' ? 'http:' : 'ws:';
  if (url.protocol === secure) return { ok: true, plain: false, url };
  if (url.protocol !== plain) return { ok: false, reason: `${url.protocol.replace(':', '')}:// is not supported here; use ${secure}//` };
  if (insecure || isLocalHost(url.hostname)) return { ok: true, plain: true, url };
  return {
    ok: false,
    reason: `${plain}// to ${url.hostname} is not allowed: use ${secure}// (plain ${plain}// only towards loopback or link-local IP literals, or with --insecure)`,
  };
}

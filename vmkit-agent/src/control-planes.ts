import type { AgentConfig } from './config.ts';
import { checkTransport } from './transport-policy.ts';

/**
 * Several control-plane URLs for one agent: the processes of one fleet (on one
 * PostgreSQL database) each at its own address, or one load-balanced URL. The agent
 * dials them in turn; a command reaches it through whichever process holds it.
 */

/** At most this many URLs in all (connect_url and connect_urls; --url at enrollment). */
export const MAX_CONTROL_PLANE_URLS = 8;

/** Where the hub listens, under a control plane's public URL (the control plane's AGENT_CONNECT_PATH). */
export const AGENT_CONNECT_PATH = '/agent/v1/connect';

/**
 * The connect URL of a control plane at `base` (http(s)://host[:port]/...), as the
 * control plane itself announces it at enrollment: same host, ws(s), /agent/v1/connect.
 */
export function connectUrlOf(base: string): string {
  const url = new URL(base);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.pathname = AGENT_CONNECT_PATH;
  url.search = '';
  url.hash = '';
  return url.href;
}

/** The http(s) base a connect URL was derived from: ws → http, wss → https, its path without /agent/v1/connect. */
export function baseUrlOf(connectUrl: string): string {
  const url = new URL(connectUrl);
  url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
  url.pathname = url.pathname.endsWith(AGENT_CONNECT_PATH) ? url.pathname.slice(0, -AGENT_CONNECT_PATH.length + 1) : '/';
  url.search = '';
  url.hash = '';
  return url.href;
}

/** The URLs the daemon dials, in order: connect_url, then connect_urls, each once. */
export function dialUrls(config: Pick<AgentConfig, 'connect_url' | 'connect_urls'>): string[] {
  return [...new Set([config.connect_url, ...(config.connect_urls ?? [])])];
}

/** The control planes release downloads may come from: the enrolled base and the base of every dialled URL. */
export function downloadBases(config: Pick<AgentConfig, 'control_plane_url' | 'connect_url' | 'connect_urls'>): string[] {
  return [...new Set([config.control_plane_url, ...dialUrls(config).map(baseUrlOf)])];
}

/** Checks every URL the daemon would dial; the first refusal names the field and why. */
export function checkDialUrls(config: Pick<AgentConfig, 'connect_url' | 'connect_urls'>, insecure: boolean): { ok: true; urls: URL[] } | { ok: false; field: string; reason: string } {
  const urls: URL[] = [];
  const all = dialUrls(config);
  if (all.length > MAX_CONTROL_PLANE_URLS) return { ok: false, field: 'connect_urls', reason: `connect_url and connect_urls name ${all.length} URLs; at most ${MAX_CONTROL_PLANE_URLS}` };
  for (const raw of all) {
    const field = raw === config.connect_url ? 'connect_url' : `connect_urls[${(config.connect_urls ?? []).indexOf(raw)}]`;
    const check = checkTransport(raw, 'ws', insecure);
    if (!check.ok) return { ok: false, field, reason: check.reason };
    urls.push(check.url);
  }
  return { ok: true, urls };
}

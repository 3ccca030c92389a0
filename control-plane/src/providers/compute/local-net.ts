import { run } from './run.ts';

/** An IPv4 network: base address as a 32-bit number and prefix length. */
export interface Ipv4Net {
  base: number;
  prefix: number;
}

export function parseIpv4(addr: string): number {
  const parts = addr.split('.');
  if (parts.length !== 4) throw new Error(`not an IPv4 address: ${addr}`);
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) throw new Error(`not an IPv4 address: ${addr}`);
    n = n * 256 + Number(p);
  }
  return n;
}

export function formatIpv4(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

export function parseCidr(cidr: string): Ipv4Net {
  const [addr, len] = cidr.split('/');
  const prefix = Number(len);
  if (addr === undefined || !/^\d{1,2}$/.test(len ?? '') || prefix > 32) throw new Error(`not an IPv4 CIDR: ${cidr}`);
  const size = 2 ** (32 - prefix);
  return { base: Math.floor(parseIpv4(addr) / size) * size, prefix };
}

function size(net: Ipv4Net): number {
  return 2 ** (32 - net.prefix);
}

export function overlaps(a: Ipv4Net, b: Ipv4Net): boolean {
  return a.base < b.base + size(b) && b.base < a.base + size(a);
}

/** The n-th /30 of the pool: network, host end (.1) and guest end (.2). */
export interface LinkBlock {
  index: number;
  net: Ipv4Net;
  host: string;
  guest: string;
}

export function blockAt(pool: Ipv4Net, index: number): LinkBlock | undefined {
  if (pool.prefix > 30 || index < 0 || index >= size(pool) / 4) return undefined;
  const base = pool.base + index * 4;
  return { index, net: { base, prefix: 30 }, host: formatIpv4(base + 1), guest: formatIpv4(base + 2) };
}

interface IpAddrJson {
  ifname?: string;
  addr_info?: { family?: string; local?: string; prefixlen?: number }[];
}
interface IpRouteJson {
  dst?: string;
}

/** Every IPv4 network the host already has on a link or in its main routing table. */
export async function hostIpv4Nets(): Promise<Ipv4Net[]> {
  const nets: Ipv4Net[] = [];
  const addrs = await run('ip', ['-j', '-4', 'addr', 'show']);
  if (addrs.code === 0) {
    for (const link of JSON.parse(addrs.stdout || '[]') as IpAddrJson[]) {
      for (const a of link.addr_info ?? []) {
        if (a.local !== undefined && a.prefixlen !== undefined) nets.push(parseCidr(`${a.local}/${a.prefixlen}`));
      }
    }
  }
  const routes = await run('ip', ['-j', '-4', 'route', 'show']);
  if (routes.code === 0) {
    for (const r of JSON.parse(routes.stdout || '[]') as IpRouteJson[]) {
      if (r.dst === undefined || r.dst === 'default') continue;
      try {
        nets.push(parseCidr(r.dst.includes('/') ? r.dst : `${r.dst}/32`));
      } catch {
        // not an IPv4 destination (e.g. "multicast"): cannot overlap our pool
      }
    }
  }
  return nets;
}

import { parseArgs } from 'node:util';
import { startStandaloneMcp } from '../mcp/standalone.ts';
import type { StandaloneMcp } from '../mcp/standalone.ts';
import type { Io } from './output.ts';

export const MCP_USAGE = `Usage: vmkit mcp --gateway URL [--listen HOST:PORT] [--allowed-host NAME ...] [--max-wait-ms N]

Serves MCP (Streamable HTTP) at / and forwards every tool call to the control plane at
--gateway (default $VMKIT_URL) with the caller's own Bearer key. --listen defaults to
127.0.0.1:8090; on loopback, Host and Origin headers must name loopback (DNS-rebinding
protection); add public names behind a proxy with --allowed-host.
`;

const OPTIONS = {
  gateway: { type: 'string' },
  listen: { type: 'string' },
  'allowed-host': { type: 'string', multiple: true },
  'max-wait-ms': { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new Error(`--listen must be HOST:PORT, got "${text}"`);
  return { host: m[1] ?? m[2] ?? '', port };
}

/** `vmkit mcp`: runs until SIGTERM/SIGINT; resolves with the exit code. */
export async function runMcpCli(argv: string[], io: Io, started?: (s: StandaloneMcp) => void): Promise<number> {
  let values: { gateway?: string; listen?: string; 'allowed-host'?: string[]; 'max-wait-ms'?: string; help?: boolean };
  try {
    ({ values } = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }));
  } catch (err) {
    io.stderr(`${(err as Error).message}\n\n${MCP_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout(MCP_USAGE);
    return 0;
  }
  const gateway = values.gateway ?? io.env.VMKIT_URL;
  let listen: { host: string; port: number };
  let maxWaitMs: number | undefined;
  try {
    if (!gateway || !/^https?:\/\//.test(gateway)) throw new Error('--gateway must be the http(s) URL of a control plane');
    listen = parseListen(values.listen ?? '127.0.0.1:8090');
    if (values['max-wait-ms'] !== undefined) {
      maxWaitMs = Number(values['max-wait-ms']);
      if (!Number.isInteger(maxWaitMs) || maxWaitMs < 0 || maxWaitMs > 600_000) throw new Error('--max-wait-ms must be 0..600000');
    }
  } catch (err) {
    io.stderr(`vmkit mcp: ${(err as Error).message}\n`);
    return 2;
  }
  const server = await startStandaloneMcp({
    gateway,
    ...listen,
    ...(maxWaitMs === undefined ? {} : { maxWaitMs }),
    ...(values['allowed-host'] ? { allowedHosts: values['allowed-host'] } : {}),
  });
  io.stdout(`vmkit mcp: serving MCP at ${server.url} (forwarding to ${gateway})\n`);
  started?.(server);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  await server.close();
  return 0;
}

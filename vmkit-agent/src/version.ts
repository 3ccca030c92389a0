import { readFileSync } from 'node:fs';
import { PROTOCOL_VERSION } from '@vmkit/protocol';

function readVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
}

export const AGENT_VERSION = readVersion();
export { PROTOCOL_VERSION };

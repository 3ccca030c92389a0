import { readFileSync } from 'node:fs';
import { PROTOCOL_VERSION } from '@vmkit/protocol';

/**
 * Set by the single-executable build (scripts/agent-build/build.ts) through esbuild's
 * `define`; undeclared when the sources run under tsx, where package.json names the version.
 */
declare const VMKIT_AGENT_BUILD_VERSION: string | undefined;

function readVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
}

export const AGENT_VERSION = typeof VMKIT_AGENT_BUILD_VERSION === 'string' ? VMKIT_AGENT_BUILD_VERSION : readVersion();
export { PROTOCOL_VERSION };

/** Set only by test builds (`build-agent --fault`): a release that misbehaves on purpose. */
declare const VMKIT_AGENT_BUILD_FAULT: string | undefined;
export const BUILD_FAULT: string | undefined = typeof VMKIT_AGENT_BUILD_FAULT === 'string' && VMKIT_AGENT_BUILD_FAULT !== '' ? VMKIT_AGENT_BUILD_FAULT : undefined;

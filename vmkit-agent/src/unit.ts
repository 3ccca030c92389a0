import { readFile } from 'node:fs/promises';
import * as sea from 'node:sea';

/**
 * The systemd unit this agent was released with: an asset of the single executable, so
 * the installer writes a unit covered by the same signature as the binary (not a second
 * download); from the repository under tsx.
 */
export async function systemdUnit(): Promise<string> {
  if (sea.isSea()) return sea.getAsset('vmkit-agent.service', 'utf8');
  return readFile(new URL('../../scripts/vmkit-agent.service', import.meta.url), 'utf8');
}

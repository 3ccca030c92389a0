import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { createFileOnce } from './create-once.ts';

/**
 * Which control-plane process this is: the `node_id` label of its metrics, and the
 * name several processes on one database will register under. Kept per data
 * directory so a restart reports as the same node.
 */
export const NODE_ID_FILE = 'node-id';

/** Letters, digits, `.`, `_`, `-`; a Prometheus label value and a safe row key alike. */
export const NODE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** `<host>-<6 hex>`: the host tells operators where it runs, the suffix keeps two on one host apart. */
function newNodeId(): string {
  const host = hostname()
    .replace(/[^A-Za-z0-9._-]/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, 48);
  return `${host || 'vmkit'}-${randomBytes(3).toString('hex')}`;
}

/**
 * The node id given (`--node-id` / VMKIT_NODE_ID), else the one in `<dataDir>/node-id`,
 * else a new one written there (0600). A file that does not hold a valid id is an
 * error, not silently replaced: the id names this node in dashboards and alerts.
 */
export function resolveNodeId(dataDir: string, given: string | undefined): { nodeId: string; created: boolean } {
  if (given !== undefined) return { nodeId: given, created: false };
  const file = join(dataDir, NODE_ID_FILE);
  let text: string | undefined;
  try {
    text = readFileSync(file, 'utf8').trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (text !== undefined) {
    if (!NODE_ID_PATTERN.test(text)) throw new Error(`${file} does not hold a valid node id (letters, digits, . _ -, at most 63); fix or delete it`);
    return { nodeId: text, created: false };
  }
  const nodeId = newNodeId();
  // A second process starting on the same directory keeps the first one's id.
  if (!createFileOnce(file, `${nodeId}\n`, 0o600)) return resolveNodeId(dataDir, undefined);
  return { nodeId, created: true };
}

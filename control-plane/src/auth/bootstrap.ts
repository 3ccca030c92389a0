import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Db } from '../db/index.ts';
import { createFirstWorkspaceWithKey, createWorkspaceWithKey } from '../db/workspaces.ts';
import { displayPrefix, generateApiKeySecret, hashApiKey } from './api-keys.ts';

export const ADMIN_KEY_FILE = 'admin.key';

export interface NewWorkspace {
  workspaceId: string;
  workspaceName: string;
  keyId: string;
  /** The admin key's secret, shown once. */
  adminKey: string;
}

/** A workspace with its first admin key. */
export async function createWorkspaceWithAdminKey(db: Db, name: string, now = Date.now()): Promise<NewWorkspace> {
  const secret = generateApiKeySecret();
  const { workspace, key } = await createWorkspaceWithKey(
    db,
    name,
    { name: 'admin', hash: hashApiKey(secret), prefix: displayPrefix(secret), scopes: ['admin'] },
    now,
  );
  return { workspaceId: workspace.id, workspaceName: workspace.name, keyId: key.id, adminKey: secret };
}

/**
 * First start only: when the database has no workspace, create one with an admin key
 * and write the key to `<dataDir>/admin.key` (0600). Later starts return null, and so
 * do all but one of several processes starting together on one empty database.
 */
export async function bootstrapIfEmpty(db: Db, dataDir: string, now = Date.now()): Promise<NewWorkspace | null> {
  const secret = generateApiKeySecret();
  const created = await createFirstWorkspaceWithKey(
    db,
    'default',
    { name: 'admin', hash: hashApiKey(secret), prefix: displayPrefix(secret), scopes: ['admin'] },
    now,
  );
  if (created === null) return null;
  const file = join(dataDir, ADMIN_KEY_FILE);
  writeFileSync(file, `${secret}\n`, { mode: 0o600 });
  chmodSync(file, 0o600); // a leftover file keeps its old mode through writeFileSync
  return { workspaceId: created.workspace.id, workspaceName: created.workspace.name, keyId: created.key.id, adminKey: secret };
}

/** The ready-to-paste MCP client config entry (a project's `.mcp.json`) for a key. */
export function mcpConfigEntry(publicUrl: string, secret: string): string {
  const entry = {
    mcpServers: {
      vmkit: { type: 'http', url: `${publicUrl}/mcp`, headers: { Authorization: `Bearer ${secret}` } },
    },
  };
  return JSON.stringify(entry, null, 2);
}

/** The `claude mcp add` line that registers this server with Claude Code. */
export function claudeMcpAddLine(publicUrl: string, secret: string): string {
  return `claude mcp add --transport http vmkit ${publicUrl}/mcp --header "Authorization: Bearer ${secret}"`;
}

/** What the server prints once when it made a workspace. */
export function newWorkspaceMessage(created: NewWorkspace, publicUrl: string): string {
  return [
    `Created workspace ${created.workspaceName} (${created.workspaceId}) with an admin API key.`,
    'It is shown only this once; the server keeps only its hash:',
    '',
    `  ${created.adminKey}`,
    '',
    "MCP client config (Claude Code reads it from .mcp.json at your project's root; other clients have their equivalent):",
    mcpConfigEntry(publicUrl, created.adminKey),
    '',
    'Or add it with the Claude Code CLI:',
    `  ${claudeMcpAddLine(publicUrl, created.adminKey)}`,
    '',
  ].join('\n');
}

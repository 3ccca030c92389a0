/**
 * The control plane's command-signing keys when several processes share one database
 * (PostgreSQL): every process must sign with the keys agents pinned, whichever process
 * enrolled them, and a rotation made through one process must reach all. The private
 * half is sealed with the SecretBox (AES-256-GCM under the secret-box key every process
 * of the deployment is given), bound to the key id; the database alone reveals no key.
 * A single SQLite process keeps its ring in files (hub/signing-keys.ts); this table then
 * stays empty.
 * Each table is written once per dialect, side by side (see ../schema.ts for the rules).
 */
import { bigint, pgTable, text as pgText } from 'drizzle-orm/pg-core';
import { integer, sqliteTable, text } from 'drizzle-orm/sqlite-core';
import { pgWorkspaces, sqliteWorkspaces } from './accounts.ts';

const ms = (name: string) => bigint(name, { mode: 'number' });

export const sqliteSigningKeys = sqliteTable('signing_keys', {
  /** `ed25519:<fingerprint>` as agents pin it. */
  keyId: text('key_id').primaryKey(),
  publicKey: text('public_key').notNull(),
  /** active | next | retired */
  state: text('state').notNull(),
  /** SecretBox envelope of the PKCS#8 PEM, context `signing-key/<key id>`. */
  sealedPrivateKey: text('sealed_private_key').notNull(),
  createdAt: integer('created_at').notNull(),
  retiredAt: integer('retired_at'),
});
export const pgSigningKeys = pgTable('signing_keys', {
  keyId: pgText('key_id').primaryKey(),
  publicKey: pgText('public_key').notNull(),
  state: pgText('state').notNull(),
  sealedPrivateKey: pgText('sealed_private_key').notNull(),
  createdAt: ms('created_at').notNull(),
  retiredAt: ms('retired_at'),
});

/**
 * Each workspace's deploy key pair (Ed25519) when several processes share one database
 * (PostgreSQL): harden installs the public half on VMs and verifies with the private
 * half, deploy seals the private half into a repository secret, so every process must
 * use the same pair. The private half is sealed with the SecretBox, bound to the
 * workspace id. A single SQLite process keeps its pairs in files
 * (services/harden/deploy-keys.ts); this table then stays empty.
 */
export const sqliteDeployKeys = sqliteTable('deploy_keys', {
  workspaceId: text('workspace_id')
    .primaryKey()
    .references(() => sqliteWorkspaces.id, { onDelete: 'cascade' }),
  /** One OpenSSH public key line. */
  publicKey: text('public_key').notNull(),
  /** SecretBox envelope of the OpenSSH private key, context `deploy-key/<workspace id>`. */
  sealedPrivateKey: text('sealed_private_key').notNull(),
  createdAt: integer('created_at').notNull(),
});
export const pgDeployKeys = pgTable('deploy_keys', {
  workspaceId: pgText('workspace_id')
    .primaryKey()
    .references(() => pgWorkspaces.id, { onDelete: 'cascade' }),
  publicKey: pgText('public_key').notNull(),
  sealedPrivateKey: pgText('sealed_private_key').notNull(),
  createdAt: ms('created_at').notNull(),
});

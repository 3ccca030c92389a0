import { z } from 'zod';

// The shapes of keys and signatures on the wire, shared by commands, messages and releases.
export const KEY_ID_PATTERN = /^ed25519:[0-9a-f]{32}$/;
export const keyIdSchema = z.string().regex(KEY_ID_PATTERN, 'must be an ed25519: key id');
export const publicKeySchema = z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'must be a base64url Ed25519 public key');
export const signatureSchema = z.string().regex(/^[A-Za-z0-9_-]{86}$/, 'must be a base64url Ed25519 signature');
/** A control-plane command-signing key as it travels: the key id and its public half. */
export const signingKeySchema = z.strictObject({ key_id: keyIdSchema, public_key: publicKeySchema });
export type SigningKey = z.infer<typeof signingKeySchema>;

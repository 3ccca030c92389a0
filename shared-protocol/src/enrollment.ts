import { z } from 'zod';
import { idSchema } from './ids.ts';
import { publicKeySchema, signingKeySchema } from './commands.ts';
import { sshHostKeysSchema } from './ssh-host-keys.ts';
import { lazySchema } from './lazy.ts';

/**
 * `POST /api/agents/enroll`: the agent trades a one-time token for an agent id and
 * the control-plane keys it will pin. Both ends parse these same schemas.
 */
export const enrollRequestSchema = lazySchema(() =>
  z.strictObject({
    token: z.string().min(1).max(256),
    public_key: publicKeySchema.describe('base64url raw Ed25519 public key of the agent'),
    hostname: z.string().min(1).max(253),
    os: z.string().max(128),
    agent_version: z.string().max(64),
    /**
     * The VM's SSH host public keys (/etc/ssh/ssh_host_*_key.pub), which deploys pin in
     * known_hosts. Optional: agents from before it was sent still enroll.
     */
    ssh_host_keys: sshHostKeysSchema.optional(),
  }),
);
export type EnrollRequest = z.infer<typeof enrollRequestSchema>;

export const enrollResponseSchema = lazySchema(() =>
  z.strictObject({
    agent_id: idSchema('agent'),
    instance_id: idSchema('instance'),
    /** The active key first; an agent enrolled with --cp-key pins exactly the keys it was given. */
    signing_keys: z.array(signingKeySchema).min(1).max(8),
    /** ws(s)://<host>/agent/v1/connect */
    connect_url: z.string().min(1).max(2048),
  }),
);
export type EnrollResponse = z.infer<typeof enrollResponseSchema>;

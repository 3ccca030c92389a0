import type { ErrorKey } from '@vmkit/protocol';

/** What a provider can tell about a VM it made. */
export type VmStatus = 'running' | 'stopped' | 'missing';

/** How the new VM's agent enrolls: cloud-init's job on a cloud VM. */
export interface AgentEnrollment {
  /**
   * The control plane's URL as the VM should use it. The `local` provider makes a
   * loopback URL (127.0.0.1 / localhost) work inside the sandbox by relaying that port
   * over the sandbox's link to the host's loopback.
   */
  control_plane_url: string;
  /** One-time enrollment token (secret). */
  token: string;
  /** Control-plane signing keys the agent pins at enrollment (`KEY_ID:PUBLIC_KEY`). */
  control_plane_keys?: string[];
  /** The fleet's other control-plane base URLs, dialled in turn after control_plane_url (the agent's connect_urls). */
  more_control_plane_urls?: string[];
  /** PEM CA certificate(s) the agent trusts instead of the system's roots (the agent's ca_file). */
  ca_pem?: string;
}

export interface CreateVmSpec {
  /** Instance id (`inst_...`); providers name their resources after it. */
  instance_id: string;
  /** Human name; becomes the VM's hostname once made DNS-safe. */
  name: string;
  /** cloud-init-like first-boot input. */
  bootstrap?: {
    agent?: AgentEnrollment;
    /** Initial root password; the provider makes a random one when absent. */
    root_password?: string;
  };
  /**
   * What the VM is for, attached where the provider can (Hetzner labels), so a retry
   * or a person in the provider's console can tell VMKit's servers apart: e.g.
   * `{ environment: 'staging', deploy: 'dep_...' }`. Keys and values: letters, digits,
   * `-`, `_`, `.`; at most 63 characters.
   */
  labels?: Record<string, string>;
}

export interface CreatedVm {
  /** The provider's own handle for the VM; opaque to callers, persisted by them. */
  ref: string;
  /** Address the control plane reaches the VM's sshd at. */
  address: string;
  ssh_port: number;
  /** The fresh VM's root password, when the provider set one (like a cloud's welcome mail). */
  root_password?: string;
}

/**
 * Makes and removes VMs. Implemented by `local` (namespace sandboxes) and later by
 * cloud providers. Providers never touch the database: they return data, the caller
 * persists it.
 */
export interface ComputeProvider {
  readonly name: string;
  create(spec: CreateVmSpec): Promise<CreatedVm>;
  /**
   * The ref `create` will return for this instance, for providers that know it up
   * front: callers persist it before creating, so a crash mid-create can be undone.
   */
  refFor?(instanceId: string): string;
  /**
   * The longest enrollment-token lifetime this provider should be handed, for providers
   * that keep the bootstrap readable after boot (Hetzner keeps user_data): a leaked
   * token then expires soon after the VM could have used it.
   */
  readonly enrollmentTokenTtlMs?: number;
  status(ref: string): Promise<VmStatus>;
  /** Idempotent: destroying a missing or half-made VM succeeds. */
  destroy(ref: string): Promise<void>;
}

/**
 * A failure of a provider, carrying the error key the REST API answers with. Local to
 * the providers: the instances service turns it into an ApiError.
 */
export class ComputeError extends Error {
  override name = 'ComputeError';
  readonly key: ErrorKey;
  constructor(
    key: ErrorKey,
    message: string,
  ) {
    super(message);
    this.key = key;
  }
}

/**
 * The `hetzner` compute provider: one Hetzner Cloud server per instance, made with
 * POST /v1/servers and cloud-init (cloud-init.ts) that installs Docker and the agent and
 * enrolls it.
 *
 * Idempotent by labels: every server carries `managed-by=vmkit` and
 * `vmkit-instance=<instance id>`, and the provider's ref is the instance id itself, so
 * a caller knows it before creating (refFor) and a create that a crash cut short, or a
 * second create of the same instance, finds the server instead of making another.
 */
import { agentCloudConfig } from './cloud-init.ts';
import { HetznerApi } from './hetzner-api.ts';
import type { HetznerAction, HetznerApiOptions, HetznerServer } from './hetzner-api.ts';
import { ComputeError } from './types.ts';
import type { ComputeProvider, CreateVmSpec, CreatedVm, VmStatus } from './types.ts';

export const MANAGED_LABEL = 'managed-by';
export const MANAGED_VALUE = 'vmkit';
export const INSTANCE_LABEL = 'vmkit-instance';
/** Hetzner refuses a create whose user_data is longer (its API docs: 32 KiB). */
export const HETZNER_USER_DATA_MAX_BYTES = 32 * 1024;
/** Hetzner's label syntax for names and values (values may also be empty; ours never are). */
const LABEL_PART = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;

export interface HetznerProviderOptions extends HetznerApiOptions {
  /** Default `cx22` (2 vCPU, 4 GB: enough for Docker builds of a small app). */
  serverType?: string;
  /** Default `ubuntu-24.04` (Node.js >= 18.19 and docker.io in the distribution). */
  image?: string;
  /** Default `fsn1`. */
  location?: string;
  /** Hetzner SSH key names or ids for root; without them Hetzner sets and mails a root password. */
  sshKeys?: (string | number)[];
  /** How long one action (create, start, delete) or a boot may take; default 10 min. */
  actionTimeoutMs?: number;
  /** First poll delay; doubles up to 5 s so a slow create stays within 3,600 requests/hour. Default 1 s. */
  pollIntervalMs?: number;
}

export class HetznerComputeProvider implements ComputeProvider {
  readonly name = 'hetzner';
  /** Boot plus cloud-init's package installs take minutes, not hours. */
  readonly enrollmentTokenTtlMs = 30 * 60_000;
  readonly api: HetznerApi;
  readonly #opts: HetznerProviderOptions;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #now: () => number;

  constructor(opts: HetznerProviderOptions) {
    this.api = new HetznerApi(opts);
    this.#opts = opts;
    this.#sleep = opts.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.#now = opts.now ?? Date.now;
  }

  refFor(instanceId: string): string {
    return instanceId;
  }

  async create(spec: CreateVmSpec): Promise<CreatedVm> {
    const labels = labelsFor(spec);
    const existing = await this.#find(spec.instance_id);
    if (existing) return this.#whenRunning(existing, spec.instance_id);
    const agent = spec.bootstrap?.agent;
    if (!agent) throw new ComputeError('invalid_request', 'A Hetzner server needs an agent enrollment: the agent is how VMKit reaches it.');
    const name = serverName(spec.name, spec.instance_id);
    const answer = await this.api.createServer({
      name,
      server_type: this.#opts.serverType ?? 'cx22',
      image: this.#opts.image ?? 'ubuntu-24.04',
      location: this.#opts.location ?? 'fsn1',
      labels,
      user_data: agentCloudConfig(agent, name, { maxBytes: HETZNER_USER_DATA_MAX_BYTES }),
      ...(this.#opts.sshKeys ? { ssh_keys: this.#opts.sshKeys } : {}),
      start_after_create: true,
      public_net: { enable_ipv4: true, enable_ipv6: true },
    });
    if ('refused' in answer) {
      // uniqueness_error: the name is taken. A concurrent create of this very instance wins; anything else is not ours.
      const raced = await this.#find(spec.instance_id);
      if (raced) return this.#whenRunning(raced, spec.instance_id);
      throw new ComputeError(
        'provision_failed',
        `Hetzner refused to create server ${name}: ${answer.refused.code}: ${answer.refused.message}. A server of that name that VMKit did not make for ${spec.instance_id} exists in the project; rename or delete it.`,
      );
    }
    const { server, action, next_actions: next, root_password: rootPassword } = answer.created;
    for (const a of [action, ...next]) await this.#waitFor(a, `create server ${name}`);
    const vm = await this.#whenRunning(server, spec.instance_id);
    return rootPassword ? { ...vm, root_password: rootPassword } : vm;
  }

  async status(ref: string): Promise<VmStatus> {
    const server = await this.#find(ref);
    if (!server || server.status === 'deleting') return 'missing';
    return ['off', 'stopping', 'unknown'].includes(server.status) ? 'stopped' : 'running';
  }

  /** Deletes every server labelled with the instance (normally one); none left is success. */
  async destroy(ref: string): Promise<void> {
    checkLabel(INSTANCE_LABEL, ref);
    const servers = await this.api.listServers({ label_selector: selector(ref) });
    for (const server of servers) {
      const action = await this.api.deleteServer(server.id);
      if (action) await this.#waitFor(action, `delete server ${server.name}`);
    }
  }

  /** The server VMKit made for this instance; the oldest when a race made two. */
  async #find(instanceId: string): Promise<HetznerServer | null> {
    checkLabel(INSTANCE_LABEL, instanceId);
    const servers = await this.api.listServers({ label_selector: selector(instanceId) });
    return servers.sort((a, b) => a.id - b.id)[0] ?? null;
  }

  async #waitFor(first: HetznerAction, what: string): Promise<void> {
    const deadline = this.#now() + (this.#opts.actionTimeoutMs ?? 10 * 60_000);
    let action = first;
    for (let attempt = 0; action.status === 'running'; attempt++) {
      if (this.#now() >= deadline) {
        throw new ComputeError('provision_failed', `Hetzner did not finish ${action.command} (action ${action.id}) in time, while trying to ${what}; a retry finds the server by its labels.`);
      }
      await this.#sleep(this.#pollDelay(attempt));
      action = await this.api.getAction(action.id);
    }
    if (action.status === 'error') {
      const e = action.error;
      throw new ComputeError('provision_failed', `Hetzner could not ${what}: action ${action.command} failed: ${e?.code ?? 'error'}: ${e?.message ?? 'no message'}`);
    }
  }

  /** Waits for `running` (a found server may still be booting) and answers its address. */
  async #whenRunning(found: HetznerServer, instanceId: string): Promise<CreatedVm> {
    const deadline = this.#now() + (this.#opts.actionTimeoutMs ?? 10 * 60_000);
    let server: HetznerServer | null = found;
    for (let attempt = 0; server.status !== 'running'; attempt++) {
      // `off` is also the moment between a create and its start, so it is waited out too.
      if (['stopping', 'deleting'].includes(server.status) || this.#now() >= deadline) {
        throw new ComputeError(
          'provision_failed',
          `Hetzner server ${server.name} for ${instanceId} is ${server.status}, not running; power it on in the Hetzner console, or delete it and provision again.`,
        );
      }
      await this.#sleep(this.#pollDelay(attempt));
      server = await this.api.getServer(server.id);
      if (!server) throw new ComputeError('provision_failed', `Hetzner server for ${instanceId} disappeared while it was starting.`);
    }
    const ip = server.public_net.ipv4?.ip;
    if (!ip) throw new ComputeError('provision_failed', `Hetzner server ${server.name} has no public IPv4 address.`);
    return { ref: instanceId, address: ip, ssh_port: 22 };
  }

  #pollDelay(attempt: number): number {
    return Math.min(5_000, (this.#opts.pollIntervalMs ?? 1_000) * 2 ** Math.min(attempt, 10));
  }
}

/** `managed-by=vmkit`, `vmkit-instance=<id>`, and the spec's labels as `vmkit-<key>`. */
export function labelsFor(spec: CreateVmSpec): Record<string, string> {
  const labels: Record<string, string> = { [MANAGED_LABEL]: MANAGED_VALUE, [INSTANCE_LABEL]: spec.instance_id };
  for (const [key, value] of Object.entries(spec.labels ?? {})) labels[`vmkit-${key}`] = value;
  for (const [key, value] of Object.entries(labels)) checkLabel(key, value);
  return labels;
}

function checkLabel(key: string, value: string): void {
  if (!LABEL_PART.test(key) || !LABEL_PART.test(value)) {
    throw new ComputeError('invalid_request', `${key}=${value} is not a valid Hetzner label (letters, digits, '-', '_', '.'; at most 63 characters).`);
  }
}

function selector(instanceId: string): string {
  return `${MANAGED_LABEL}=${MANAGED_VALUE},${INSTANCE_LABEL}=${instanceId}`;
}

/** A hostname-safe server name, unique per instance: `<name>-<last 8 of the instance id>`. */
export function serverName(name: string, instanceId: string): string {
  const suffix = instanceId.toLowerCase().replace(/[^a-z0-9]/g, '').slice(-8);
  const base = name
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63 - suffix.length - 1)
    .replace(/-+$/, '');
  return base === '' ? `vm-${suffix}` : `${base}-${suffix}`;
}

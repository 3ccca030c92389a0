import type {
  AgentIdentity,
  AgentStateStore,
  CommandState,
  CommandStore,
  ConnectedInfo,
  RecordResultOutcome,
  StoredCommand,
  StoredResult,
} from './store.ts';

export interface MemoryAgent extends AgentIdentity {
  state: 'connected' | 'disconnected';
  connectedAt: number | null;
  lastSeen: number | null;
  agentVersion: string | null;
  hostname: string | null;
  os: string | null;
}

/** In-memory AgentStateStore + CommandStore: unit tests and simulations, not production. */
export class MemoryHubStore implements AgentStateStore, CommandStore {
  readonly agents = new Map<string, MemoryAgent>();
  readonly commands = new Map<string, StoredCommand>();
  lastSeenWrites = 0;

  addAgent(identity: Omit<AgentIdentity, 'revoked' | 'pinnedKeyIds'> & Partial<AgentIdentity>): void {
    this.agents.set(identity.id, {
      revoked: false,
      pinnedKeyIds: [],
      ...identity,
      state: 'disconnected',
      connectedAt: null,
      lastSeen: null,
      agentVersion: null,
      hostname: null,
      os: null,
    });
  }

  findAgent(agentId: string): Promise<AgentIdentity | undefined> {
    return Promise.resolve(this.agents.get(agentId));
  }

  markConnected(agentId: string, info: ConnectedInfo): Promise<void> {
    const a = this.agents.get(agentId);
    if (a) Object.assign(a, { state: 'connected', ...info, lastSeen: info.connectedAt });
    return Promise.resolve();
  }

  markDisconnected(agentId: string, at: number): Promise<void> {
    const a = this.agents.get(agentId);
    if (a) Object.assign(a, { state: 'disconnected', lastSeen: Math.max(a.lastSeen ?? 0, at) });
    return Promise.resolve();
  }

  touchLastSeen(seen: ReadonlyMap<string, number>): Promise<void> {
    this.lastSeenWrites++;
    for (const [id, at] of seen) {
      const a = this.agents.get(id);
      if (a) a.lastSeen = Math.max(a.lastSeen ?? 0, at);
    }
    return Promise.resolve();
  }

  markAllDisconnected(): Promise<void> {
    for (const a of this.agents.values()) a.state = 'disconnected';
    return Promise.resolve();
  }

  setPinnedKeys(agentId: string, keyIds: readonly string[]): Promise<void> {
    const a = this.agents.get(agentId);
    if (a) a.pinnedKeyIds = [...keyIds];
    return Promise.resolve();
  }

  insert(cmd: Omit<StoredCommand, 'result' | 'updatedAt'>): Promise<void> {
    this.commands.set(cmd.id, { ...cmd, updatedAt: cmd.createdAt });
    return Promise.resolve();
  }

  get(commandId: string): Promise<StoredCommand | undefined> {
    return Promise.resolve(this.commands.get(commandId));
  }

  transition(commandId: string, from: readonly CommandState[], to: CommandState, at: number): Promise<boolean> {
    const c = this.commands.get(commandId);
    if (!c || !from.includes(c.state)) return Promise.resolve(false);
    c.state = to;
    c.updatedAt = at;
    return Promise.resolve(true);
  }

  recordResult(commandId: string, agentId: string, result: StoredResult, at: number): Promise<RecordResultOutcome> {
    const c = this.commands.get(commandId);
    if (!c || c.agentId !== agentId || c.state === 'expired') return Promise.resolve('unknown');
    if (c.result) return Promise.resolve('duplicate');
    c.result = result;
    c.state = result.status === 'succeeded' ? 'succeeded' : 'failed';
    c.updatedAt = at;
    return Promise.resolve('stored');
  }

  deliverable(agentId: string, now: number): Promise<StoredCommand[]> {
    return Promise.resolve(
      [...this.commands.values()]
        .filter((c) => c.agentId === agentId && (c.state === 'queued' || c.state === 'sent') && c.expiresAt > now)
        .sort((a, b) => a.createdAt - b.createdAt),
    );
  }

  timeOutOrphans(createdBefore: number, expiredBefore: number, at: number): Promise<string[]> {
    const ids: string[] = [];
    for (const c of this.commands.values()) {
      if (['sent', 'acked', 'running'].includes(c.state) && c.createdAt < createdBefore && c.expiresAt < expiredBefore) {
        c.state = 'timed_out';
        c.updatedAt = at;
        ids.push(c.id);
      }
    }
    return Promise.resolve(ids);
  }

  expireQueued(now: number): Promise<string[]> {
    const ids: string[] = [];
    for (const c of this.commands.values()) {
      if (c.state === 'queued' && c.expiresAt <= now) {
        c.state = 'expired';
        c.updatedAt = now;
        ids.push(c.id);
      }
    }
    return Promise.resolve(ids);
  }
}

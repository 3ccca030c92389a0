/**
 * A process of simulated agents for scripts/bench/agents.ts: real Ed25519 keys, the
 * real challenge–response handshake, signature/addressee/expiry/replay checks on every
 * command, ack + result, heartbeats at the interval the welcome names (whose replies
 * carry the hub's result acks, `heartbeat-acks`), and reconnects with full-jitter backoff that honours the
 * hub's retry_after_ms (as vmkit-agent does). Given several control-plane URLs (the
 * processes of one fleet), each agent dials them as vmkit-agent's AgentConnection does:
 * one at a time, the next one after every close or failed dial; agent i starts at URL
 * i mod P, as if it had enrolled through that process. Not meant to be run by hand.
 */
import type { KeyObject } from 'node:crypto';
import { WebSocket } from 'ws';
import { AGENT_FEATURES, AGENT_FEATURES_HEADER, PROTOCOL_VERSION, ReplayCache, pinKeys, privateKeyFromSeed, signHello, verifyCommand } from '@vmkit/protocol';
import type { PinnedKeys, ServerMessage } from '@vmkit/protocol';
import { DEFAULT_BACKOFF, fullJitterDelay } from '../../vmkit-agent/src/backoff.ts';
import { benchSeed } from './agents-seed.ts';


interface SimAgent {
  id: string;
  key: KeyObject;
  /** Index in `urls` of the control plane dialled now or last. */
  urlIndex: number;
  ws: WebSocket | undefined;
  connected: boolean;
  attempt: number;
  retryNotBefore: number;
  pinned: PinnedKeys;
  seen: ReplayCache;
  heartbeat: NodeJS.Timeout | undefined;
}

interface Start {
  op: 'start';
  urls: string[];
  agents: [string, number][];
  /** Name (upgrade header) every feature vmkit-agent names (`queued`, `heartbeat-acks`, `batch-signature`); false: none, as agents older than them. */
  features: boolean;
}

let urls: string[] = [];
const agents: SimAgent[] = [];
let handshakes = 0;
let overloaded = 0;
let queued = 0;
let headers: Record<string, string> = {};
let commands = 0;
/** Results the hub acknowledged: by `result_ack` frame, and on its heartbeats. */
let resultAcks = 0;
let heartbeatAcks = 0;
let stopping = false;
/** Failed dials and socket errors by code (EMFILE, ECONNREFUSED, ...) or ws's message: what limited a run. */
const errors: Record<string, number> = {};

function send(a: SimAgent, msg: unknown): void {
  if (a.ws?.readyState === WebSocket.OPEN) a.ws.send(JSON.stringify(msg));
}

function onMessage(a: SimAgent, m: ServerMessage): void {
  switch (m.type) {
    case 'challenge':
      send(a, {
        protocol: PROTOCOL_VERSION,
        type: 'hello',
        agent_id: a.id,
        nonce: m.nonce,
        signature: signHello(a.key, a.id, m.nonce),
        agent_version: 'bench',
        hostname: 'bench',
        os: 'bench',
      });
      return;
    case 'welcome':
      a.connected = true;
      a.attempt = 0;
      a.pinned = pinKeys(m.signing_keys);
      handshakes++;
      // As vmkit-agent: a heartbeat every interval, from the welcome on.
      a.heartbeat = setInterval(() => send(a, { protocol: PROTOCOL_VERSION, type: 'heartbeat', sent_at: Date.now() }), m.heartbeat_interval_ms);
      return;
    case 'heartbeat':
      heartbeatAcks += m.result_acks?.length ?? 0;
      return;
    case 'result_ack':
      resultAcks++;
      return;
    case 'queued':
      queued++;
      return;
    case 'error':
      if (m.key === 'overloaded') overloaded++;
      if (m.retry_after_ms !== undefined) a.retryNotBefore = Math.max(a.retryNotBefore, Date.now() + m.retry_after_ms);
      return;
    case 'command': {
      commands++;
      const v = verifyCommand(m.envelope, m.signature, { pinnedKeys: a.pinned, selfAgentId: a.id, now: Date.now(), seen: a.seen }, m.batch);
      const id = typeof m.envelope.id === 'string' ? m.envelope.id : '';
      if (!v.ok) {
        send(a, { protocol: PROTOCOL_VERSION, type: 'result', command_id: id, status: 'refused', error: { key: v.reason, message: v.detail }, finished_at: Date.now() });
        return;
      }
      a.seen.remember(v.command);
      send(a, { protocol: PROTOCOL_VERSION, type: 'ack', command_id: id });
      send(a, { protocol: PROTOCOL_VERSION, type: 'result', command_id: id, status: 'succeeded', output: { pong: true }, finished_at: Date.now() });
      return;
    }
    default:
      return;
  }
}

function connect(a: SimAgent): void {
  const ws = new WebSocket(urls[a.urlIndex] ?? '', { perMessageDeflate: false, handshakeTimeout: 30_000, headers });
  a.ws = ws;
  ws.on('message', (data: Buffer) => {
    try {
      onMessage(a, JSON.parse(data.toString('utf8')) as ServerMessage);
    } catch {
      // a bad frame from the hub would be a finding, not a crash of the benchmark
    }
  });
  ws.on('error', (err: NodeJS.ErrnoException) => {
    // ws's own errors carry no code: their message says it (`Unexpected server response: 503`, a handshake timeout).
    const code = err.code ?? err.message.slice(0, 48);
    errors[code] = (errors[code] ?? 0) + 1;
  });
  ws.on('close', () => {
    a.connected = false;
    a.ws = undefined;
    clearInterval(a.heartbeat);
    if (stopping) return;
    const delay = Math.max(a.retryNotBefore - Date.now(), fullJitterDelay(a.attempt, DEFAULT_BACKOFF));
    a.attempt++;
    // As vmkit-agent: the next dial goes to the next control plane.
    a.urlIndex = (a.urlIndex + 1) % urls.length;
    setTimeout(() => connect(a), delay);
  });
}

process.on('message', (msg: Start | { op: 'dial' } | { op: 'stop' }) => {
  if (msg.op === 'start') {
    urls = msg.urls;
    headers = msg.features ? { [AGENT_FEATURES_HEADER]: AGENT_FEATURES.join(',') } : {};
    for (const [id, i] of msg.agents) {
      agents.push({ id, key: privateKeyFromSeed(benchSeed(i)), urlIndex: i % urls.length, ws: undefined, connected: false, attempt: 0, retryNotBefore: 0, pinned: new Map(), seen: new ReplayCache(), heartbeat: undefined });
    }
    // Keys made: the bench starts its clock when every worker is ready, then says dial.
    process.send?.({ ready: true });
  } else if (msg.op === 'dial') {
    for (const a of agents) connect(a);
  } else {
    stopping = true;
    for (const a of agents) {
      clearInterval(a.heartbeat);
      a.ws?.terminate();
    }
    setTimeout(() => process.exit(0), 100);
  }
});

setInterval(() => {
  process.send?.({ connected: agents.filter((a) => a.connected).length, handshakes, overloaded, queued, commands, resultAcks, heartbeatAcks, errors });
}, 250).unref();

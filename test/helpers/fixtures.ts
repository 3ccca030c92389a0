import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { agentReleaseManifestSchema, enrollRequestSchema, enrollResponseSchema, hardenResultSchema, privateKeyFromSeed, signingKeyPairFrom } from '@vmkit/protocol';
import type { SigningKeyPair } from '@vmkit/protocol';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');

type KeyName = 'control_plane' | 'control_plane_next' | 'attacker' | 'agent';

export function fixtureKey(name: KeyName): SigningKeyPair {
  const seeds = JSON.parse(readFileSync(join(FIXTURES, 'keys.json'), 'utf8')) as Record<KeyName, string>;
  return signingKeyPairFrom(privateKeyFromSeed(Buffer.from(seeds[name], 'hex')));
}

/**
 * One case of the shared message corpus. `frame` is the JSON value sent, or `text`
 * the raw frame text when the case is about bytes that are not JSON.
 */
export interface MessageFixture {
  name: string;
  description: string;
  direction: 'agent' | 'server' | 'both';
  frame?: unknown;
  text?: string;
  expect: { ok: true; type: string } | { ok: false; kind: string };
}

export function messageFixtures(set: 'valid' | 'invalid'): MessageFixture[] {
  const dir = join(FIXTURES, 'messages', set);
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => ({ name: f, ...(JSON.parse(readFileSync(join(dir, f), 'utf8')) as Omit<MessageFixture, 'name'>) }));
}

export function fixtureFrame(fx: MessageFixture): string {
  return fx.text ?? JSON.stringify(fx.frame);
}

/** Shapes that travel outside the WebSocket messages, each fixture naming its schema. */
export const WIRE_SCHEMAS = {
  enroll_request: enrollRequestSchema,
  enroll_response: enrollResponseSchema,
  harden_result: hardenResultSchema,
  agent_release_manifest: agentReleaseManifestSchema,
} as const;
export type WireSchemaName = keyof typeof WIRE_SCHEMAS;

/** One case of test/fixtures/wire: `path` is where an invalid value is wrong ('' for the object itself). */
export interface WireFixture {
  name: string;
  description: string;
  schema: WireSchemaName;
  value: Record<string, unknown>;
  expect: { ok: true } | { ok: false; path: string };
}

export function wireFixtures(set: 'valid' | 'invalid', schema?: WireSchemaName): WireFixture[] {
  const dir = join(FIXTURES, 'wire', set);
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => ({ name: f, ...(JSON.parse(readFileSync(join(dir, f), 'utf8')) as Omit<WireFixture, 'name'>) }))
    .filter((fx) => schema === undefined || fx.schema === schema);
}

/** One case of test/fixtures/shell-frames: the bytes of a binary channel frame and what they decode to. */
export interface ShellFrameFixture {
  name: string;
  description: string;
  hex: string;
  /** Valid cases: who sends it (`hub`, `agent`, `both`) and the decoded frame (`data_hex` for data bytes). */
  direction?: 'hub' | 'agent' | 'both';
  frame?: Record<string, unknown>;
  /** Invalid cases: why the decoder refuses it. */
  expect?: { reason: string };
}

export function shellFrameFixtures(set: 'valid' | 'invalid'): ShellFrameFixture[] {
  const dir = join(FIXTURES, 'shell-frames', set);
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => ({ name: f, ...(JSON.parse(readFileSync(join(dir, f), 'utf8')) as Omit<ShellFrameFixture, 'name'>) }));
}

/** A fixture's decoded frame as the codec represents it (data bytes as a Buffer). */
export function fixtureShellFrame(fx: ShellFrameFixture): Record<string, unknown> {
  const { data_hex, ...rest } = fx.frame ?? {};
  return typeof data_hex === 'string' ? { ...rest, data: Buffer.from(data_hex, 'hex') } : rest;
}

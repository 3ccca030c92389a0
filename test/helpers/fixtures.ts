import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { privateKeyFromSeed, signingKeyPairFrom } from '@vmkit/protocol';
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

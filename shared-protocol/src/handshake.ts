import { randomBytes, sign, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { canonicalJson } from './canonical.ts';

/** Domain separation for the agent's proof of identity. */
const HELLO_CONTEXT = 'vmkit-agent-hello-v1\n';

export function newChallengeNonce(): string {
  return randomBytes(32).toString('base64url');
}

function helloBytes(agentId: string, nonce: string): Buffer {
  return Buffer.from(HELLO_CONTEXT + canonicalJson({ agent_id: agentId, nonce }), 'utf8');
}

/** The agent's answer to a challenge: its signature over its id and the nonce. */
export function signHello(agentKey: KeyObject, agentId: string, nonce: string): string {
  return sign(null, helloBytes(agentId, nonce), agentKey).toString('base64url');
}

export function verifyHello(agentPublicKey: KeyObject, agentId: string, nonce: string, signature: string): boolean {
  try {
    return verify(null, helloBytes(agentId, nonce), agentPublicKey, Buffer.from(signature, 'base64url'));
  } catch {
    return false;
  }
}

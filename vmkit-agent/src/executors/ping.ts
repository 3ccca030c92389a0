import { AGENT_VERSION } from '../version.ts';
import type { ExecutorSpec } from './types.ts';

export const pingExecutor: ExecutorSpec<'ping'> = {
  exclusive: false,
  run: () => Promise.resolve({ status: 'succeeded', output: { pong: true, agent_version: AGENT_VERSION, time: Date.now() } }),
};

#!/usr/bin/env node
// The agent ships as TypeScript sources (no build step); tsx strips the types at load.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli.ts');

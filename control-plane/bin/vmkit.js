#!/usr/bin/env node
// Runs the TypeScript entry under tsx (no build step).
import { register } from 'tsx/esm/api';
register();
await import('../src/cli/vmkit-main.ts');

#!/usr/bin/env node
// `vmkit`: the built operator CLI (control-plane/dist, from `npm run build`).
import { runBuilt } from './run-built.js';

await runBuilt('vmkit-main', 'vmkit');

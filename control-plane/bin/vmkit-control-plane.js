#!/usr/bin/env node
// `vmkit-control-plane`: the built control plane (control-plane/dist, from `npm run build`).
import { runBuilt } from './run-built.js';

await runBuilt('server-main', 'vmkit-control-plane');

// `npm run build`: the control plane's JavaScript into dist/ and the dashboard's assets into dist/dashboard.
import { relative } from 'node:path';
import { DEFAULT_OUT_DIR, buildControlPlane } from './build.ts';
import { DEFAULT_DASHBOARD_DIR, buildDashboard } from './dashboard/build.ts';

const shown = (dir: string) => relative(process.cwd(), dir) || '.';
const [files, manifest] = await Promise.all([buildControlPlane(), buildDashboard()]);
process.stdout.write(`control plane built into ${shown(DEFAULT_OUT_DIR)} (${files.filter((f) => f.endsWith('.js')).length} entries with source maps)\n`);
process.stdout.write(`dashboard ${manifest.version} built into ${shown(DEFAULT_DASHBOARD_DIR)}\n`);

// `npm run build`: the dashboard's static assets into dist/dashboard (served at `/`).
import { relative } from 'node:path';
import { DEFAULT_DASHBOARD_DIR, buildDashboard } from './build.ts';

const manifest = await buildDashboard();
process.stdout.write(`dashboard ${manifest.version} built into ${relative(process.cwd(), DEFAULT_DASHBOARD_DIR) || '.'}\n`);

import { join } from 'node:path';

/**
 * Where `npm run build` puts the dashboard and where the server looks by default. Apart
 * from build.ts so the server does not load esbuild, a build-time tool, to know it.
 */
export const DEFAULT_DASHBOARD_DIR = join(import.meta.dirname, '..', '..', 'dist', 'dashboard');

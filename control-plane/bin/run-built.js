import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * Runs dist/<entry>.js, the bundle `npm run build` makes (`npm start` builds first), with
 * source maps on so stack traces name the TypeScript sources (control-plane/src/...ts:line).
 * They must be on before the bundle loads: Node reads a module's map as it loads it.
 */
export async function runBuilt(entry, program) {
  const bundle = new URL(`../dist/${entry}.js`, import.meta.url);
  if (!existsSync(bundle)) {
    const root = fileURLToPath(new URL('../..', import.meta.url));
    process.stderr.write(`${program}: the control plane is not built (${fileURLToPath(bundle)} is missing).\nBuild it with \`npm run build\` in ${root}, then run ${program} again.\n`);
    process.exit(1);
  }
  process.setSourceMapsEnabled(true);
  await import(bundle.href);
}

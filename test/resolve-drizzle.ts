// Loaded into every test process before its test (tap's `node-arg` in package.json).
//
// Why: Node 24's ESM resolver asks, for every `.js` and `.ts` file it resolves, for the
// scope of the nearest package.json (`getPackageScopeConfig`), and each time it copies that
// package's `exports` out of its native cache and parses it again. drizzle-orm's
// package.json is 175 KB, nearly all `exports`, and a test that imports the control plane
// loads about 150 of drizzle's files: measured on a 2-vCPU AMD EPYC, importing
// test/helpers/control-plane.ts took 2.9 s (3.9 s of CPU) with Node's resolver alone and
// 1.0 s (1.6 s of CPU) with these hooks, in each of the suite's ~200 test processes.
//
// What: only drizzle-orm's own resolutions are answered here, the way Node answers them.
// - A relative `.js` import inside drizzle-orm is that file, as ESM: the package says
//   `"type": "module"`, and its CommonJS build is the `.cjs` files, which are not matched.
// - `drizzle-orm` and `drizzle-orm/...` are resolved by Node once per importing directory
//   and import conditions, then answered from that.
// Everything else, and every load, goes through Node as before. The built control plane
// (control-plane/dist) is one bundle and never resolves drizzle's files at run time.
import { registerHooks } from 'node:module';
import type { ResolveFnOutput } from 'node:module';

const DRIZZLE_FILE = '/node_modules/drizzle-orm/';
const resolved = new Map<string, ResolveFnOutput>();

registerHooks({
  resolve(specifier, context, nextResolve) {
    const parent = context.parentURL;
    if (parent === undefined) return nextResolve(specifier, context);
    if (parent.includes(DRIZZLE_FILE) && (specifier.startsWith('./') || specifier.startsWith('../')) && specifier.endsWith('.js')) {
      return { url: new URL(specifier, parent).href, format: 'module', shortCircuit: true };
    }
    if (specifier === 'drizzle-orm' || specifier.startsWith('drizzle-orm/')) {
      const key = `${specifier}\0${context.conditions.join(',')}\0${parent.slice(0, parent.lastIndexOf('/'))}`;
      let answer = resolved.get(key);
      if (answer === undefined) {
        const { url, format } = nextResolve(specifier, context);
        answer = { url, format, shortCircuit: true };
        resolved.set(key, answer);
      }
      return answer;
    }
    return nextResolve(specifier, context);
  },
});

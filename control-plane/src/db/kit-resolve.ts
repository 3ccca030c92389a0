// drizzle-kit lives in the root node_modules but npm keeps drizzle-orm under
// control-plane/node_modules, where drizzle-kit cannot see it. This resolve hook,
// used only by `npm run db:generate`, points drizzle-kit's imports at our copy.
import { register } from 'node:module';

const hook = `
const base = ${JSON.stringify(new URL('../../package.json', import.meta.url).href)};
export async function resolve(specifier, context, next) {
  if (specifier === 'drizzle-orm' || specifier.startsWith('drizzle-orm/')) {
    return next(specifier, { ...context, parentURL: base });
  }
  return next(specifier, context);
}`;
register(`data:text/javascript,${encodeURIComponent(hook)}`);

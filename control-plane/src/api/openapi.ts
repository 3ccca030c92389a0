import type { ApiPlugin } from '../app.ts';

/** The OpenAPI 3.1 document, generated from the zod schemas of every route. */
export const openapiRoutes: ApiPlugin = (app) => {
  app.get('/api/openapi.json', { config: { auth: 'none' }, schema: { hide: true } }, () => app.swagger());
};

export { buildApp, ROUTES } from './app.ts';
export type { ApiPlugin, App, AppContext } from './app.ts';
export { startControlPlane } from './server.ts';
export type { RunningControlPlane, StartOptions } from './server.ts';
export { loadConfig, makeConfig, DEFAULT_CONFIG, ConfigError } from './config.ts';
export type { Config, RateLimitConfig, LogLevel } from './config.ts';
export { ApiError, isApiError } from './errors.ts';
export { openDatabase, closeDatabase } from './db/index.ts';
export type { Db } from './db/index.ts';

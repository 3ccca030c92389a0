import pino from 'pino';
import type { DestinationStream, Logger } from 'pino';
import type { LogLevel } from './config.ts';

/** Paths pino replaces with "[redacted]" wherever they appear in a log line. */
export const REDACT_PATHS = [
  'authorization',
  'headers.authorization',
  'req.headers.authorization',
  'req.headers.cookie',
  '*.authorization',
  'secret',
  '*.secret',
  'token',
  '*.token',
  'adminKey',
  '*.adminKey',
  'privateKey',
  '*.privateKey',
  // provider settings as the API takes them (PUT /api/workspace/*) and as clients hold them
  'private_key',
  '*.private_key',
  'apiToken',
  '*.apiToken',
  'secretSealed',
  '*.secretSealed',
];

/** JSON logs (pino); request lines carry `request_id`. */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  const options = { level, redact: { paths: REDACT_PATHS, censor: '[redacted]' }, base: { service: 'vmkit-control-plane' } };
  return destination ? pino(options, destination) : pino(options);
}

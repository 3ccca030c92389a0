export * from './ids.ts';
export * from './errors.ts';
export * from './keys.ts';
export * from './canonical.ts';
export * from './commands.ts';
export * from './messages.ts';
export * from './handshake.ts';
export * from './text.ts';

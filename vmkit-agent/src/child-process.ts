/**
 * `execFile` from node:child_process, loaded on first use. Node compiles child_process
 * (and dgram and the socket list it pulls in) when it is first required; an idle agent
 * runs no program, and leaving them unloaded keeps about 1 MiB out of its resident
 * memory (measured with `npm run bench -- agent`). Same function, same overloads, same
 * `util.promisify` behaviour ({stdout, stderr}).
 */
import type { execFile as ExecFile } from 'node:child_process';
import { promisify } from 'node:util';

const childProcess = () => process.getBuiltinModule('node:child_process');

function lazyExecFile(...args: unknown[]): unknown {
  return Reflect.apply(childProcess().execFile, undefined, args);
}
Object.defineProperty(lazyExecFile, promisify.custom, {
  value: (...args: unknown[]): unknown => Reflect.apply(promisify(childProcess().execFile), undefined, args),
});

export const execFile = lazyExecFile as unknown as typeof ExecFile;

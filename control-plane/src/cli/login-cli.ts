import { parseArgs } from 'node:util';
import type { ReadStream } from 'node:tty';
import { removeLogin, saveLogin } from './credentials.ts';
import { RequestFailed, Unreachable, UsageError, failureText, makeClient } from './rest-client.ts';
import type { Io } from './output.ts';

export const LOGIN_USAGE = `Usage: vmkit login --url URL     the key is read from stdin when piped, else asked for (not echoed)
       vmkit logout

login checks the key against URL before saving it (0600) in $XDG_CONFIG_HOME/vmkit/credentials.json
(~/.config/vmkit/credentials.json); later commands use it for that URL. Exit codes: 0 done,
1 the server refused the key or could not be reached (nothing saved), 2 usage.
`;

async function readAll(stdin: NodeJS.ReadableStream): Promise<string> {
  let text = '';
  for await (const chunk of stdin) text += typeof chunk === 'string' ? chunk : (chunk).toString('utf8');
  return text;
}

/** One line from a terminal with echo off: the key never shows on screen or in scrollback. */
function readHidden(tty: ReadStream, prompt: string, io: Io): Promise<string> {
  // Echo goes off before the prompt shows: a key typed or pasted the moment it appears
  // must not reach the screen.
  tty.setRawMode(true);
  io.stderr(prompt);
  tty.resume();
  tty.setEncoding('utf8');
  return new Promise((resolve, reject) => {
    let line = '';
    const done = (err?: Error) => {
      tty.off('data', onData);
      tty.setRawMode(false);
      tty.pause();
      io.stderr('\n');
      if (err) reject(err);
      else resolve(line);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') return done();
        if (ch === '\u0003' || ch === '\u0004') return done(new UsageError('login cancelled; nothing saved'));
        if (ch === '\u007f' || ch === '\b') line = line.slice(0, -1);
        else line += ch;
      }
    };
    tty.on('data', onData);
  });
}

async function readKey(url: string, io: Io): Promise<string> {
  const stdin = io.stdin;
  if (!stdin) throw new UsageError('login reads the key from stdin, and there is none');
  const tty = stdin as ReadStream;
  const key = tty.isTTY && typeof tty.setRawMode === 'function' ? await readHidden(tty, `API key for ${url}: `, io) : await readAll(stdin);
  return key.trim();
}

export async function runLoginCli(argv: string[], io: Io): Promise<number> {
  const [command, ...rest] = argv;
  let values: { url?: string; help?: boolean };
  try {
    ({ values } = parseArgs({ args: rest, options: { url: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true }));
  } catch (err) {
    io.stderr(`${(err as Error).message}\n\n${LOGIN_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout(LOGIN_USAGE);
    return 0;
  }
  if (command === 'logout') {
    const file = removeLogin(io.env);
    io.stdout(file.removed ? `Logged out: removed ${file.path}.\n` : `Not logged in (no ${file.path}).\n`);
    return 0;
  }
  try {
    const url = values.url || io.env.VMKIT_URL;
    if (!url) throw new UsageError('login needs --url URL (the control plane, e.g. http://127.0.0.1:8080)');
    if (!/^https?:\/\/[^/]/.test(url)) throw new UsageError(`--url must be an http:// or https:// URL, not ${url}`);
    const key = await readKey(url, io);
    if (!key) throw new UsageError('no key given; nothing saved');
    try {
      // Any authenticated read proves the key; a key without that scope is still a valid key.
      await makeClient(url, key).request('GET', '/api/instances');
    } catch (err) {
      if (!(err instanceof RequestFailed && err.key === 'forbidden')) throw err;
    }
    const file = saveLogin(io.env, { url, key });
    io.stdout(`Logged in to ${url}; the key is saved in ${file} (0600).\n`);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(`${err.message}\n\n${LOGIN_USAGE}`);
      return 2;
    }
    if (err instanceof RequestFailed) {
      io.stderr(`error: the server refused this key, nothing saved: ${failureText(err)}\n`);
      return 1;
    }
    if (err instanceof Unreachable) {
      io.stderr(`error: ${err.message}; nothing saved\n`);
      return 1;
    }
    throw err;
  }
}

/**
 * The instance's browser terminal (xterm.js over the shell WebSocket door, signed in by
 * the session cookie) and its recorded sessions (asciinema-player).
 */
import { Terminal } from '@xterm/xterm';
import '@xterm/xterm/css/xterm.css';
import { create as createPlayer } from 'asciinema-player';
import 'asciinema-player/dist/bundle/asciinema-player.css';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { api, messageOf } from '../api.ts';
import { ErrorText, Time } from '../components.tsx';
import type { ShellSession } from '../types.ts';

interface ServerControl {
  type: 'opened' | 'exit' | 'error';
  session_id?: string;
  reason?: string;
  code?: number | null;
  message?: string | null;
}

/** Columns and rows that fit the box: xterm's cells are about 0.6 em by 1.2 em at its font size. */
function fit(el: HTMLElement, fontSize: number): { cols: number; rows: number } {
  const cols = Math.max(20, Math.min(200, Math.floor(el.clientWidth / (fontSize * 0.6))));
  return { cols, rows: 24 };
}

export function BrowserTerminal({ instanceId, onEnded }: { instanceId: string; onEnded: () => void }) {
  const box = useRef<HTMLDivElement>(null);
  const [status, setStatus] = useState('Connecting…');
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const fontSize = 14;
    const { cols, rows } = fit(el, fontSize);
    const term = new Terminal({ cols, rows, fontSize, cursorBlink: true, convertEol: false, scrollback: 2000 });
    term.open(el);
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}/api/instances/${encodeURIComponent(instanceId)}/shell?cols=${cols}&rows=${rows}&term=xterm-256color`);
    ws.binaryType = 'arraybuffer';
    const encoder = new TextEncoder();
    let opened = false;
    ws.onmessage = (ev: MessageEvent<ArrayBuffer | string>) => {
      if (typeof ev.data !== 'string') {
        term.write(new Uint8Array(ev.data));
        return;
      }
      const msg = JSON.parse(ev.data) as ServerControl;
      if (msg.type === 'opened') {
        opened = true;
        setStatus('Connected');
        term.focus();
      } else if (msg.type === 'exit') {
        setStatus(`Ended: ${msg.reason ?? 'exit'}${msg.code === null || msg.code === undefined ? '' : ` (exit code ${msg.code})`}`);
      } else if (msg.type === 'error') {
        setError(msg.message ?? 'The shell refused a message.');
      }
    };
    ws.onclose = () => {
      if (!opened) setError('The shell could not be opened: the instance’s agent must be connected and your key needs the shell scope (the refusal is in the audit log).');
      onEnded();
    };
    const input = term.onData((d) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(d));
    });
    const resize = term.onResize(({ cols: c, rows: r }) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'resize', cols: c, rows: r }));
    });
    return () => {
      input.dispose();
      resize.dispose();
      ws.close();
      term.dispose();
    };
  }, [instanceId, onEnded]);
  return (
    <div class="terminal-wrap">
      <p class="muted small" role="status" data-terminal-status>
        {status}
      </p>
      <div class="terminal" ref={box} data-terminal />
      <ErrorText error={error} />
    </div>
  );
}

function Player({ url }: { url: string }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = box.current;
    if (!el) return;
    const player = createPlayer({ url, fetchOpts: { credentials: 'same-origin' } }, el, { autoPlay: true, fit: 'width', idleTimeLimit: 2 });
    return () => player.dispose();
  }, [url]);
  return <div class="player" ref={box} data-player={url} />;
}

export function Recordings({ instanceId, refresh }: { instanceId: string; refresh: number }) {
  const [items, setItems] = useState<ShellSession[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [playing, setPlaying] = useState<string | null>(null);
  const load = useCallback(() => {
    api<{ items: ShellSession[] }>('GET', `/api/shell-sessions?instance_id=${encodeURIComponent(instanceId)}&limit=20`)
      .then((r) => setItems(r.items))
      .catch((err: unknown) => setError(messageOf(err)));
  }, [instanceId]);
  useEffect(load, [load, refresh]);
  return (
    <>
      <ErrorText error={error} />
      {items && items.length === 0 ? <p class="muted small">No shell sessions on this instance yet.</p> : null}
      {items && items.length > 0 ? (
        <div class="table-wrap">
          <table>
            <thead>
              <tr>
                <th scope="col">Started</th>
                <th scope="col">Who</th>
                <th scope="col">How</th>
                <th scope="col">Ended</th>
                <th scope="col">Recording</th>
              </tr>
            </thead>
            <tbody>
              {items.map((s) => (
                <tr key={s.id} data-shell-session={s.id}>
                  <td>
                    <Time at={s.started_at} />
                  </td>
                  <td>{s.key_name ?? s.key_id ?? '—'}</td>
                  <td>
                    {s.via}
                    {s.command ? <div class="muted small">{s.command}</div> : null}
                  </td>
                  <td>{s.ended_at ? `${s.end_reason ?? ''}${s.exit_code === null ? '' : ` (${s.exit_code})`}` : 'open'}</td>
                  <td>
                    {s.recording_url ? (
                      <button type="button" onClick={() => setPlaying(s.recording_url)}>
                        Play
                      </button>
                    ) : (
                      <span class="muted">none</span>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
      {playing ? <Player url={playing} /> : null}
    </>
  );
}

/**
 * One EventSource per signed-in page (GET /api/events): agent state and harden progress
 * are pushed, nothing is polled. Components subscribe with useLive.
 */
import { useEffect } from 'preact/hooks';
import { api, sessionEnded } from './api.ts';
import type { LiveEvent } from './types.ts';

type Listener = (event: LiveEvent) => void;
const listeners = new Set<Listener>();
const reconnectListeners = new Set<() => void>();
let source: EventSource | null = null;

export function startLive(): void {
  stopLive();
  const es = new EventSource('/api/events');
  source = es;
  let opened = false;
  es.onopen = () => {
    // After a reconnect, whatever was missed is read again.
    if (opened) for (const fn of reconnectListeners) fn();
    opened = true;
  };
  for (const type of ['instance', 'harden'] as const) {
    es.addEventListener(type, (e: MessageEvent<string>) => {
      const event = JSON.parse(e.data) as LiveEvent;
      for (const fn of listeners) fn(event);
    });
  }
  es.addEventListener('session_ended', (e: MessageEvent<string>) => {
    const { message } = JSON.parse(e.data) as { message: string };
    stopLive();
    sessionEnded(message);
  });
  es.onerror = () => {
    // The browser retries by itself, except when the server refused (401): ask why.
    if (es.readyState === EventSource.CLOSED) {
      api('GET', '/api/session').catch(() => undefined);
    }
  };
}

export function stopLive(): void {
  source?.close();
  source = null;
}

export function useLive(fn: Listener, onReconnect?: () => void): void {
  useEffect(() => {
    listeners.add(fn);
    if (onReconnect) reconnectListeners.add(onReconnect);
    return () => {
      listeners.delete(fn);
      if (onReconnect) reconnectListeners.delete(onReconnect);
    };
  }, [fn, onReconnect]);
}

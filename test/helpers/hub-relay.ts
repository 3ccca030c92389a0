/**
 * A TCP relay on 127.0.0.1 in front of a control plane, for tests that need to choose
 * when an agent's dial reaches the hub and when its connection breaks: connections are
 * accepted and held until `release()`, then piped through (from 127.0.0.1) to the
 * target port; `cut()` breaks every piped connection at once, `hold()` holds new ones
 * again.
 */
import { connect, createServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';

export class HeldRelay {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #piped = new Set<Socket>();
  #held: Socket[] = [];
  #released = false;
  #waiters: { n: number; resolve: () => void }[] = [];
  /** Connections accepted so far (each one is one dial of the client). */
  accepted = 0;
  port = 0;

  readonly targetPort: number;
  private constructor(targetPort: number) {
    this.targetPort = targetPort;
    this.#server = createServer((s) => this.#onConnection(s));
  }

  static async start(targetPort: number): Promise<HeldRelay> {
    const relay = new HeldRelay(targetPort);
    await new Promise<void>((resolve) => relay.#server.listen(0, '127.0.0.1', resolve));
    relay.port = (relay.#server.address() as AddressInfo).port;
    return relay;
  }

  /** Resolves once `n` connections were accepted. */
  acceptedAtLeast(n: number): Promise<void> {
    if (this.accepted >= n) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ n, resolve }));
  }

  release(): void {
    this.#released = true;
    for (const s of this.#held) this.#pipe(s);
    this.#held = [];
  }

  /** New connections wait again until the next `release()`. */
  hold(): void {
    this.#released = false;
  }

  /** Breaks every connection piped so far, both sides, as a network failure would. */
  cut(): void {
    for (const s of this.#piped) s.destroy();
    this.#piped.clear();
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #onConnection(s: Socket): void {
    this.accepted++;
    this.#track(s);
    for (const w of this.#waiters.filter((x) => this.accepted >= x.n)) {
      this.#waiters.splice(this.#waiters.indexOf(w), 1);
      w.resolve();
    }
    if (this.#released) this.#pipe(s);
    else {
      s.pause();
      this.#held.push(s);
      s.on('close', () => (this.#held = this.#held.filter((h) => h !== s)));
    }
  }

  #pipe(s: Socket): void {
    if (s.destroyed) return;
    const up = connect({ host: '127.0.0.1', port: this.targetPort, localAddress: '127.0.0.1' });
    this.#track(up);
    this.#piped.add(s);
    this.#piped.add(up);
    s.on('close', () => this.#piped.delete(s));
    up.on('close', () => this.#piped.delete(up));
    s.on('close', () => up.destroy());
    up.on('close', () => s.destroy());
    s.pipe(up).pipe(s);
    s.resume();
  }

  #track(s: Socket): void {
    this.#sockets.add(s);
    s.on('error', () => s.destroy());
    s.on('close', () => this.#sockets.delete(s));
  }
}

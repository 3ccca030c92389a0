import type { IPty } from 'node-pty';

interface QueuedWrite {
  buffer: Buffer;
  offset: number;
}

/**
 * Bytes handed to `pty.write` that have not reached the PTY yet. node-pty queues
 * writes internally and reports neither completion nor backlog, so this reads its
 * queue (node-pty 1.1.0, pinned exactly; test/agent/shell-session.test.ts fails if the
 * shape changes). Without it input credit could not wait for the shell to read.
 */
export function ptyQueuedBytes(pty: IPty): number {
  const queue = (pty as unknown as { _writeStream?: { _writeQueue?: QueuedWrite[] } })._writeStream?._writeQueue;
  if (!Array.isArray(queue)) return 0;
  let n = 0;
  for (const q of queue) n += q.buffer.length - q.offset;
  return n;
}

/** Whether this node-pty exposes the queue ptyQueuedBytes reads. */
export function ptyQueueReadable(pty: IPty): boolean {
  return Array.isArray((pty as unknown as { _writeStream?: { _writeQueue?: unknown } })._writeStream?._writeQueue);
}

import { randomFillSync } from 'node:crypto';

/**
 * Random bytes handed out from a pool refilled 4 KiB at a time: one call into OpenSSL per
 * few hundred command nonces instead of one each (a `randomBytes` call cost about as much
 * as the rest of building an envelope, the Ed25519 signature aside). Every byte comes from
 * the same CSPRNG and is handed out once.
 */
const POOL_BYTES = 4096;
const pool = Buffer.alloc(POOL_BYTES);
let offset = POOL_BYTES;

/** `size` fresh random bytes (at most the pool's size), as base64url. */
export function randomBase64url(size: number): string {
  if (size > POOL_BYTES) throw new RangeError(`at most ${POOL_BYTES} random bytes at once`);
  if (offset + size > POOL_BYTES) {
    randomFillSync(pool);
    offset = 0;
  }
  const text = pool.toString('base64url', offset, offset + size);
  offset += size;
  return text;
}

/**
 * Numbers at the edges of the protocol's timestamps and counters (non-negative safe
 * integers up to 8.64e15): the near misses the property tests of hand-written checks
 * (checked-envelope, hot-frames) try in every numeric field.
 */
export const NUMBER_EDGES: readonly number[] = [0, -0, -1, 1.5, 8.64e15, 8.64e15 + 2, 2 ** 53];

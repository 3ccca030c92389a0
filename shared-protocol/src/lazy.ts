/**
 * A schema built on first use. zod builds every schema when its module is imported; an
 * idle agent parses its config, its state and a handful of message types, and never
 * builds the command, shell, harden and release schemas until such a message arrives.
 * The proxy stands for the schema in every way code uses one (methods, `_zod`,
 * `instanceof`, composition into other schemas); its type is the schema's own.
 */
export function lazySchema<T extends object>(build: () => T): T {
  let built: T | undefined;
  const schema = (): T => (built ??= build());
  return new Proxy({} as T, {
    get: (_t, key) => Reflect.get(schema(), key),
    set: (_t, key, value) => Reflect.set(schema(), key, value),
    has: (_t, key) => Reflect.has(schema(), key),
    ownKeys: () => Reflect.ownKeys(schema()),
    getOwnPropertyDescriptor: (_t, key) => {
      const d = Reflect.getOwnPropertyDescriptor(schema(), key);
      // The proxy's own target has no such property: it may only be reported as configurable.
      return d === undefined ? undefined : { ...d, configurable: true };
    },
    defineProperty: (_t, key, d) => Reflect.defineProperty(schema(), key, d),
    deleteProperty: (_t, key) => Reflect.deleteProperty(schema(), key),
    getPrototypeOf: () => Reflect.getPrototypeOf(schema()),
  });
}

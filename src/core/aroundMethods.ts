/**
 * The same object with each of `methods` run through `around` (given the method's name and a call of
 * it with the original arguments); every other property as it was.
 */
export function aroundMethods<T extends object>(subject: T, methods: readonly string[], around: (method: string, call: () => Promise<unknown>) => Promise<unknown>): T {
  return new Proxy(subject, {
    get(target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver);
      if (typeof property !== 'string' || !methods.includes(property) || typeof value !== 'function') return value;
      return (...args: unknown[]) => around(property, () => (value as (...a: unknown[]) => Promise<unknown>).apply(target, args));
    },
  });
}

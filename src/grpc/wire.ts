/** Small conversions between our values and proto-loader's JS shapes (camelCase, longs as numbers). */

/**
 * Trailer naming the domain kind of an error the daemon itself sent: it tells a client that an
 * UNAVAILABLE came from the daemon (e.g. its disk is full), not from failing to reach it.
 */
export const ERROR_KIND_TRAILER = 'kts-error-kind';

export interface Timestamp {
  seconds: number;
  nanos: number;
}

export function toTimestamp(iso: string | Date | null | undefined): Timestamp | null {
  if (!iso) return null;
  const ms = (iso instanceof Date ? iso : new Date(iso)).getTime();
  if (Number.isNaN(ms)) return null;
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}

export interface AnyMessage {
  /** proto-loader keeps google.protobuf.Any's field name as on the wire, even with camelCase on. */
  type_url: string;
  value: Buffer;
}

export function jsonAny(typeUrl: string, value: unknown): AnyMessage {
  return { type_url: typeUrl, value: Buffer.from(JSON.stringify(value)) };
}

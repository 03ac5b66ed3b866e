import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { notFound } from '../core/errors.js';
import { MAX_STATUS_MESSAGE_CHARS, toServiceError } from './grpcErrors.js';

describe('toServiceError', () => {
  it('keeps a short message as it is', () => {
    expect(toServiceError(notFound('no pod or container "x"'))).toMatchObject({ code: status.NOT_FOUND, details: 'no pod or container "x"' });
  });

  it('cuts a message that quotes a huge field, so that it fits the grpc-message trailer (found by API fuzzing)', () => {
    const error = toServiceError(notFound(`no pod or container "${'x'.repeat(1_000_000)}"`));
    expect(error.code).toBe(status.NOT_FOUND);
    expect(error.details).toHaveLength(MAX_STATUS_MESSAGE_CHARS + '… (997974 more characters cut)'.length);
    expect(error.details).toMatch(/^no pod or container "x+… \(997974 more characters cut\)$/);
    expect(error.message).toBe(error.details);
  });
});

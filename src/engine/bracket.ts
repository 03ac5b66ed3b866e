import type { Span } from '@opentelemetry/api';
import { errorMessage } from '../core/errors.js';
import { withSpan, type SpanAttributes } from '../telemetry/tracing.js';

/**
 * One effect on the host, bracketed by events: the intent is committed before the effect starts,
 * the outcome after it ends; if the effect fails, its failure is recorded with the error's text
 * and the error is rethrown. A crash anywhere in between leaves the intent without an outcome,
 * which is what recovery looks for (recovery.ts).
 */
export interface EffectBracket<TEvent, TResult> {
  /** The write-ahead intent; omitted when the log already ends with it (a stop or delete being finished). */
  intent?: TEvent;
  /** The backend call's span (`sandboxer.…`); omitted when the effect opens its own. */
  span?: { name: string; attributes: SpanAttributes };
  /** The effect itself, inside `span`. */
  effect: (span?: Span) => Promise<TResult>;
  /** The rest of the effect, after its span ends and before the outcome is recorded. */
  finishEffect?: (result: TResult) => Promise<void>;
  /** The outcome; omitted when the caller records it after the bracket, so that a failed commit of it is never taken for the effect failing. */
  outcome?: (result: TResult) => TEvent;
  /** Runs after the outcome is recorded (e.g. watch the new process); a failure here is recorded as the operation's. */
  afterOutcome?: (result: TResult) => Promise<void> | void;
  /** The failure event, given the error's text. */
  failure: (reason: string) => TEvent;
  /** Undoes what a failed effect may have left, before its failure is recorded. */
  undo?: () => Promise<void>;
}

/** Records the intent, runs the effect in its span, records the outcome or the failure; see EffectBracket. */
export async function bracket<TEvent, TResult>(record: (event: TEvent) => unknown, step: EffectBracket<TEvent, TResult>): Promise<TResult> {
  if (step.intent) record(step.intent);
  try {
    const { span } = step;
    const result: TResult = span ? await withSpan(span.name, { attributes: span.attributes }, (opened) => step.effect(opened)) : await step.effect();
    await step.finishEffect?.(result);
    if (step.outcome) record(step.outcome(result));
    await step.afterOutcome?.(result);
    return result;
  } catch (error) {
    await step.undo?.();
    record(step.failure(errorMessage(error)));
    throw error;
  }
}

import { z } from 'zod';
import { lazySchema } from './lazy.ts';

/**
 * What the agent's `harden` executor reports in its result's `output`, whether it
 * succeeded, refused or failed (a failed result's output says what was restored).
 * The bounds are generous: the whole result must still fit one frame.
 */
const text = z.string().max(8192);

export const hardenStepReportSchema = lazySchema(() =>
  z.strictObject({
    step: z.string().min(1).max(64),
    changed: z.boolean(),
    before: text.optional(),
    after: text.optional(),
    detail: text.optional(),
  }),
);
export type HardenStepReport = z.infer<typeof hardenStepReportSchema>;

export const hardenResultSchema = lazySchema(() =>
  z.strictObject({
    status: z.enum(['hardened', 'already_hardened', 'refused', 'failed', 'rolled_back']),
    dry_run: z.boolean(),
    steps: z.array(hardenStepReportSchema).max(64),
    docker: z.enum(['ok', 'not_installed', 'not_running']),
    /** How the winning sshd settings are placed. */
    placement: z.enum(['drop-in', 'managed-block', 'none']),
    /** The check that failed, when one did. */
    failed_check: z.string().max(128).optional(),
    /** Files put back as they were after a failed check. */
    restored: z.array(z.string().max(4096)).max(256).optional(),
    /** Accounts a rollback deleted or changed back (`user kamal deleted`). */
    accounts_restored: z.array(z.string().max(256)).max(64).optional(),
    /** Set when the agent died mid-run and, at its next start, rolled the run back or completed it. */
    recovery: z.strictObject({ action: z.enum(['rolled_back', 'completed']), reason: text }).optional(),
    /** Things the caller should know (e.g. sshd -T could not read the current config). */
    notes: z.array(text).max(32).optional(),
  }),
);
export type HardenResult = z.infer<typeof hardenResultSchema>;
export type HardenStatus = HardenResult['status'];

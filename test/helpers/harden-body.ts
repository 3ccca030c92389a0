/** The body of `POST /api/instances/:id/harden` (and `GET .../harden/:command_id`) as the harden tests read it. */
export interface HardenBody {
  status: string;
  instance_id: string;
  command_id: string;
  steps?: Array<{ step: string; changed: boolean; detail?: string }>;
  verification?: { ok: boolean | null; checks?: Array<{ check: string; ok: boolean }> };
  error?: string;
  message?: string;
}

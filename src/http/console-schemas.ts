import { z } from 'zod';
import { PERMISSIONS } from './auth';
import { DateTime, Id, component } from './schemas';

/**
 * The answers of the routes the admin console reads besides the API's own (GET /v1/me,
 * GET /v1/activity), registered as response components of the OpenAPI document like those of
 * schemas.ts. A file of their own: they need PERMISSIONS (auth.ts), which imports schemas.ts.
 */

/** `GET /v1/me`: what the caller's credential may do, for the console to show only what it may. */
export const MeBody = component(
  'Me',
  z.strictObject({
    principal: z
      .string()
      .meta({ description: "The caller's name in audit logs (a token's name, jwt:<sub>)" }),
    orgId: Id.meta({ description: 'The org of this request (x-zitadel-orgid, else the home org)' }),
    homeOrg: Id.meta({ description: 'The org of a request without x-zitadel-orgid' }).optional(),
    orgs: z
      .union([z.array(Id), z.literal('*')])
      .meta({
        description:
          'The orgs the credential may act on (`*`: every org); absent when the authorizer cannot tell',
      })
      .optional(),
    permissions: z
      .array(z.enum(PERMISSIONS))
      .meta({ description: 'The permissions the credential holds on this org' }),
  }),
);

/** Query of `GET /v1/activity`: how many minutes. */
export const ACTIVITY_MINUTES_MAX = 1440;

/** `GET /v1/activity`: failures, locks and unlocks of the org per minute, counted by this process. */
export const ActivityBody = component(
  'Activity',
  z.strictObject({
    orgId: Id,
    scope: z.literal('process').meta({
      description:
        'Counted in memory by the process that answers (each process of a fleet counts its own; a restart starts from zero)',
    }),
    stepSeconds: z.literal(60),
    minutes: z.array(
      z.strictObject({
        start: DateTime.meta({ description: 'Start of the minute' }),
        failures: z.int().min(0).meta({ description: 'Failed credential checks' }),
        locks: z.int().min(0).meta({ description: 'Users locked (by failures or by an admin)' }),
        unlocks: z.int().min(0).meta({ description: 'Users unlocked by an admin' }),
      }),
    ),
  }),
);

/**
 * The request body schemas (src/http/schemas.ts): the OpenAPI document's request schemas are
 * exactly z.toJSONSchema of the schemas the handlers parse bodies with (its response schemas of
 * the schemas the renderers are typed by), and a field that fails
 * answers the error the hand-written checks answered (validateId, parseSettingValue,
 * `Errors.Request.Missing`/`Invalid` for strings), checked against those checks on generated values.
 */
import fc from 'fast-check';
import { z } from 'zod';
import { GrpcCode, InvalidArgumentError, UserLockedError } from '../../src/core/errors';
import { InvalidCredentialsError, toHttpError } from '../../src/http/errors';
import { MAX_SETTING_VALUE, parseSettingValue } from '../../src/core/settings';
import { FACTORS, validateFactor, validateId } from '../../src/core/subjects';
import {
  AttemptBody,
  AttemptRequest,
  CodeCheckRequest,
  DetailsBody,
  ErrorDetailBody,
  ErrorResponseBody,
  Factor,
  HealthBody,
  Id,
  IssuedCodeBody,
  PasswordCheckRequest,
  REQUEST_BODIES,
  RESPONSE_COMPONENTS,
  ReadinessBody,
  ResourceOwnerTypeBody,
  SettlementBody,
  SettingsRequest,
  TotpCheckRequest,
  UserRequest,
  parseFields,
  parseParameter,
} from '../../src/http/schemas';
import { ROUTES, buildOpenApiDocument } from '../../src/sidecar/openapi';

/** What a call answered: its value, or its error's code, message and field. */
function outcome(f: () => unknown): unknown {
  try {
    return { value: f() };
  } catch (error) {
    if (!(error instanceof InvalidArgumentError)) throw error;
    return { code: error.code, message: error.message, field: error.field, status: error.httpStatus };
  }
}

/** The string check the routers had before the schemas (requireString). */
function requireString(value: unknown, field: string): string {
  if (typeof value !== 'string') {
    throw new InvalidArgumentError(
      value === undefined || value === null ? 'Errors.Request.Missing' : 'Errors.Request.Invalid',
      `${field} must be a string`,
      field,
    );
  }
  return value;
}

/** Any JSON value, ids and settings-like values more often. */
const jsonValue = fc.oneof(
  fc.string(),
  fc.string({ unit: 'binary', maxLength: 300 }),
  fc.string({ minLength: 250, maxLength: 260 }),
  fc.constantFrom('', '\u0000', 'a\u009f', '\ud800', 'ok', ...FACTORS, 'PASSWORD'),
  fc.integer({ min: -5, max: 2 ** 33 }),
  fc.double(),
  fc.constantFrom(MAX_SETTING_VALUE, MAX_SETTING_VALUE + 1, 1.5, -1, -0),
  fc.stringMatching(/^[0-9]{1,11}$/),
  fc.constantFrom(String(MAX_SETTING_VALUE), String(MAX_SETTING_VALUE + 1), '007', ' 1', '1e3'),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.array(fc.integer(), { maxLength: 2 }),
  fc.dictionary(fc.string(), fc.integer(), { maxKeys: 2 }),
);

describe('the OpenAPI request schemas are generated from the handlers’ schemas', () => {
  const doc = buildOpenApiDocument() as {
    paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: unknown }> } }>>;
    components: { schemas: Record<string, unknown> };
  };

  it.each(Object.entries(REQUEST_BODIES))('%s is z.toJSONSchema of its zod schema', (name, schema) => {
    const { $schema, ...expected } = z.toJSONSchema(schema, { target: 'draft-2020-12', io: 'input' });
    expect($schema).toBe('https://json-schema.org/draft/2020-12/schema');
    expect(doc.components.schemas[name]).toEqual(expected);
  });

  describe('the response schemas are generated from the zod schemas the renderers are typed by', () => {
    const { schemas: generated } = z.toJSONSchema(RESPONSE_COMPONENTS, {
      target: 'draft-2020-12',
      io: 'output',
      uri: (id) => `#/components/schemas/${id}`,
    });
    const names = Object.keys(generated);

    it('every component the responses use is registered (errors, settings, users, checks, service)', () => {
      expect(names.sort()).toEqual(
        [
          'Activity',
          'Attempt',
          'CheckSuccess',
          'DefenceSettings',
          'Details',
          'DetailsResponse',
          'DetailsV2',
          'Error',
          'ErrorDetail',
          'Event',
          'EventActor',
          'Events',
          'WebhookDeadLetters',
          'Factor',
          'GetPolicyResponse',
          'Health',
          'IssuedCode',
          'LockedUsers',
          'Me',
          'Policy',
          'PolicyResponse',
          'Readiness',
          'ResourceOwnerType',
          'Settlement',
          'SettingsV2Response',
          'UserLockout',
        ].sort(),
      );
    });

    it.each(names)('%s is z.toJSONSchema of its zod schema (its components as $refs)', (name) => {
      const { $schema, $id, ...expected } = generated[name] as Record<string, unknown>;
      expect($schema).toBe('https://json-schema.org/draft/2020-12/schema');
      expect($id).toBe(`#/components/schemas/${name}`);
      expect(doc.components.schemas[name]).toEqual(expected);
    });

    it.each([
      ['IssuedCode', IssuedCodeBody],
      ['Attempt', AttemptBody],
      ['Settlement', SettlementBody],
      ['Health', HealthBody],
      ['ErrorDetail', ErrorDetailBody],
      ['Details', DetailsBody],
      ['ResourceOwnerType', ResourceOwnerTypeBody],
      ['Readiness', ReadinessBody],
      ['Factor', Factor],
    ] as const)('%s, which uses no other component, is its schema converted alone', (name, schema) => {
      const { $schema: _dialect, ...alone } = z.toJSONSchema(schema, {
        target: 'draft-2020-12',
        io: 'output',
      });
      expect(doc.components.schemas[name]).toEqual(alone);
    });

    it('every object of a response schema is closed (additionalProperties: false) and lists what it requires', () => {
      const open: string[] = [];
      const walk = (node: unknown, where: string): void => {
        if (Array.isArray(node)) {
          node.forEach((n, i) => walk(n, `${where}/${i}`));
          return;
        }
        if (typeof node !== 'object' || node === null) return;
        const o = node as Record<string, unknown>;
        // An event's `data` is open by design: event types and fields added later flow through (issue 14).
        if (where === 'Event/properties/data') return;
        if (o.type === 'object' && (o.additionalProperties !== false || !Array.isArray(o.required))) {
          open.push(where);
        }
        for (const [key, value] of Object.entries(o)) walk(value, `${where}/${key}`);
      };
      for (const name of names) walk(doc.components.schemas[name], name);
      expect(open).toEqual([]);
    });

    it('the error codes are the gRPC codes of GrpcCode, as integers', () => {
      expect(doc.components.schemas.Error).toMatchObject({
        properties: { code: { type: 'integer', enum: Object.values(GrpcCode) } },
        required: ['code', 'message', 'details'],
      });
      expect(doc.components.schemas.ErrorDetail).toMatchObject({ oneOf: [{}, {}] });
    });

    it('the bodies the error mapping answers are what the Error schema accepts', () => {
      for (const error of [
        new InvalidArgumentError('Errors.Id.Missing', 'userId is required', 'userId'),
        new InvalidCredentialsError('password', 3),
        new UserLockedError(undefined),
        new Error('boom'),
        { status: 400, type: 'entity.parse.failed' },
      ]) {
        const { body } = toHttpError(error);
        expect(ErrorResponseBody.parse(body)).toEqual(body);
      }
    });
  });

  it('every route with a body refers to one of them, and each is used', () => {
    const used = new Set<string>();
    for (const route of ROUTES) {
      const requestBody = doc.paths[route.path]?.[route.method]?.requestBody;
      if (route.body === undefined) {
        expect({ op: route.operationId, requestBody }).toEqual({
          op: route.operationId,
          requestBody: undefined,
        });
        continue;
      }
      expect(Object.keys(REQUEST_BODIES)).toContain(route.body);
      expect(requestBody?.content['application/json']?.schema).toEqual({
        $ref: `#/components/schemas/${route.body}`,
      });
      used.add(route.body);
    }
    expect([...used].sort()).toEqual(Object.keys(REQUEST_BODIES).sort());
  });

  it('no generated schema carries $schema or an unresolved $ref', () => {
    const text = JSON.stringify(doc.components.schemas);
    expect(text).not.toContain('$schema');
    for (const match of text.matchAll(/"\$ref":"#\/components\/schemas\/([^"]+)"/g)) {
      expect(Object.keys(doc.components.schemas)).toContain(match[1]);
    }
  });
});

describe('the id parameters are parsed by the schema their documentation is generated from', () => {
  const ID_PARAMETERS = ['userId', 'cursor', 'ctx.orgId', 'x-zitadel-orgid', 'type'];

  it('each documented id parameter’s schema is z.toJSONSchema of Id; the others are the hand-written ones', () => {
    const doc = buildOpenApiDocument() as {
      paths: Record<string, Record<string, { parameters?: { name: string; schema: unknown }[] }>>;
    };
    const { $schema: _dialect, ...id } = z.toJSONSchema(Id, { target: 'draft-2020-12', io: 'input' });
    const seen = new Map<string, unknown[]>();
    for (const route of ROUTES) {
      for (const p of doc.paths[route.path]?.[route.method]?.parameters ?? []) {
        seen.set(p.name, [...(seen.get(p.name) ?? []), p.schema]);
      }
    }
    for (const name of ID_PARAMETERS) {
      expect(seen.get(name)?.length).toBeGreaterThan(0);
      for (const schema of seen.get(name) ?? []) expect({ name, schema }).toEqual({ name, schema: id });
    }
    expect([...seen.keys()].filter((n) => !ID_PARAMETERS.includes(n)).sort()).toEqual([
      'attemptId',
      'ctx.instance',
      'limit',
      'minutes',
    ]);
  });

  it('parseParameter(Id) answers as validateId, naming the parameter', () => {
    fc.assert(
      fc.property(jsonValue, fc.constantFrom(...ID_PARAMETERS), (value, name) => {
        expect(outcome(() => parseParameter(Id, value, name))).toEqual(
          outcome(() => validateId(value, name)),
        );
      }),
      { numRuns: 2000, seed: 20261202 },
    );
  });
});

describe('a field that fails answers the error of the hand-written checks', () => {
  const runs = { numRuns: 2000, seed: 20261202 };

  it('userId as validateId', () => {
    fc.assert(
      fc.property(jsonValue, (userId) => {
        const body = userId === undefined ? {} : { userId };
        expect(outcome(() => parseFields(UserRequest, body).userId)).toEqual(
          outcome(() => validateId(userId, 'userId')),
        );
      }),
      runs,
    );
  });

  it('settings values as parseSettingValue (absent or null is 0)', () => {
    fc.assert(
      fc.property(jsonValue, jsonValue, (maxPasswordAttempts, maxOtpAttempts) => {
        const body = { maxPasswordAttempts, maxOtpAttempts };
        expect(outcome(() => parseFields(SettingsRequest, body))).toEqual(
          outcome(() => ({
            maxPasswordAttempts: parseSettingValue(maxPasswordAttempts ?? 0, 'maxPasswordAttempts'),
            maxOtpAttempts: parseSettingValue(maxOtpAttempts ?? 0, 'maxOtpAttempts'),
          })),
        );
      }),
      runs,
    );
  });

  it('password checks: userId, then password, then encodedHash (a string, absent or null)', () => {
    fc.assert(
      fc.property(jsonValue, jsonValue, jsonValue, (userId, password, encodedHash) => {
        expect(outcome(() => parseFields(PasswordCheckRequest, { userId, password, encodedHash }))).toEqual(
          outcome(() => {
            validateId(userId, 'userId');
            requireString(password, 'password');
            if (encodedHash !== undefined && encodedHash !== null && typeof encodedHash !== 'string') {
              throw new InvalidArgumentError(
                'Errors.Request.Invalid',
                'encodedHash must be a string',
                'encodedHash',
              );
            }
            return { userId, password, encodedHash };
          }),
        );
      }),
      runs,
    );
  });

  it('TOTP and code checks: userId, then code, then secret', () => {
    fc.assert(
      fc.property(jsonValue, jsonValue, jsonValue, (userId, code, secret) => {
        expect(outcome(() => parseFields(TotpCheckRequest, { userId, code, secret }))).toEqual(
          outcome(() => ({
            userId: validateId(userId, 'userId'),
            code: requireString(code, 'code'),
            secret: requireString(secret, 'secret'),
          })),
        );
        expect(outcome(() => parseFields(CodeCheckRequest, { userId, code }))).toEqual(
          outcome(() => ({ userId: validateId(userId, 'userId'), code: requireString(code, 'code') })),
        );
      }),
      runs,
    );
  });

  it('attempts: userId, then factor as validateFactor', () => {
    fc.assert(
      fc.property(jsonValue, jsonValue, (userId, factor) => {
        expect(outcome(() => parseFields(AttemptRequest, { userId, factor }))).toEqual(
          outcome(() => ({ userId: validateId(userId, 'userId'), factor: validateFactor(factor, 'factor') })),
        );
      }),
      runs,
    );
  });

  it('unknown fields are ignored and left out of the parsed body', () => {
    expect(parseFields(UserRequest, { userId: 'u', extra: 1 })).toEqual({ userId: 'u' });
  });
});

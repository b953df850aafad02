import { z } from 'zod';
import { errorResponseSchema } from '@sealbus/protocol';
import { VERSION } from '../version.js';
import type { RouteDef } from './routes/types.js';

const toSchema = (s: z.ZodType) =>
  z.toJSONSchema(s, { target: 'openapi-3.0', io: 'input', unrepresentable: 'any' }) as Record<
    string,
    unknown
  >;

const ERRORS: Record<string, string> = {
  '400':
    'invalid input (INVALID, BAD_JSON; BAD_TOKEN or BAD_BINDING for a public identity token or key binding)',
  '401': 'missing, malformed, expired, replayed or unverifiable signature; unknown or revoked key',
  '403': 'authenticated but not allowed (role or room membership)',
  '404': 'no such resource',
  '409':
    'conflict with the current state (existing key or subject, stale epoch, a key that differs from the registered one, a NATS key bound to another user)',
  '413': 'body too large',
  '507': 'storage full, or a blob quota spent (ROOM_BLOB_QUOTA, OWNER_BLOB_QUOTA)',
  '503': 'store, nonce store or audit log unavailable (fails closed)',
};

/**
 * The OpenAPI 3.0 document, generated from the same route table and zod
 * schemas that validate requests, so it cannot drift from the code.
 */
export function openApiDocument(routes: RouteDef[]) {
  const paths: Record<string, Record<string, unknown>> = {};
  const errorSchema = toSchema(errorResponseSchema);
  for (const r of routes) {
    const params = [...r.path.matchAll(/\{(\w+)\}/g)].map((m) => ({
      name: m[1],
      in: 'path',
      required: true,
      schema: { type: 'string' },
    }));
    const responses: Record<string, unknown> = {
      [String(r.status)]: {
        description: 'success',
        content: { 'application/json': { schema: toSchema(r.response) } },
      },
    };
    if (r.access !== 'public') {
      for (const [code, description] of Object.entries(ERRORS)) {
        responses[code] = { description, content: { 'application/json': { schema: errorSchema } } };
      }
    }
    (paths[r.path] ??= {})[r.method] = {
      summary: r.summary,
      'x-sealbus-access': r.access,
      ...(r.access === 'public' ? { security: [] } : {}),
      ...(params.length ? { parameters: params } : {}),
      ...(r.streamBody
        ? {
            requestBody: {
              required: true,
              content: {
                'application/octet-stream': { schema: { type: 'string', format: 'binary' } },
              },
            },
          }
        : {}),
      ...(r.body
        ? {
            requestBody: {
              required: true,
              content: { 'application/json': { schema: toSchema(r.body) } },
            },
          }
        : {}),
      responses,
    };
  }
  return {
    openapi: '3.0.3',
    info: {
      title: 'Sealbus membershipd',
      version: VERSION,
      description:
        'Every route except /healthz, /readyz and /openapi.json requires an RFC 9421 HTTP Message Signature ' +
        '(Ed25519; components "@method" "@authority" "@path" "@query", plus "content-type" "content-digest" with a body; ' +
        'parameters created, expires, nonce, keyid (sign_pub hex), alg="ed25519", tag="sealbus").',
    },
    components: {
      securitySchemes: {
        httpSignature: {
          type: 'apiKey',
          in: 'header',
          name: 'Signature',
          description: 'RFC 9421 signature (Sealbus profile)',
        },
      },
    },
    security: [{ httpSignature: [] }],
    paths,
  };
}

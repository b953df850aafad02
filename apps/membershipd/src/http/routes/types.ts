import type { z } from 'zod';
import type { AppContext } from '../context.js';
import type { Services } from '../guard.js';

/** One route: its handler and what the OpenAPI document says about it. */
export interface RouteDef {
  method: 'get' | 'post' | 'put' | 'delete';
  /** OpenAPI-style path, e.g. `/rooms/{id}/members`. */
  path: string;
  summary: string;
  /** Who may call it, for the document (the handler enforces it). */
  access: 'public' | 'signed' | 'admin' | 'member' | 'owner';
  body?: z.ZodType;
  /** Bytes a body may have when more than the app's default (64 KiB) is needed. */
  maxBody?: number;
  /**
   * The handler reads the body itself, streamed, with its own limit: auth
   * verifies the signed headers only and leaves the claimed digest in
   * `bodyDigest`, and the body is `application/octet-stream` (for the document).
   */
  streamBody?: true;
  status: number;
  response: z.ZodType;
  handler: (c: AppContext, s: Services) => Promise<Response>;
}

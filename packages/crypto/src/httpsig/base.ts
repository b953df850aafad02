import { serializeInnerList, type BareItem, type InnerList } from 'structured-headers';
import { SignatureError } from './errors.js';
import type { SignableRequest } from './types.js';

/**
 * The value of one covered component (RFC 9421 section 2.1 for fields,
 * 2.2 for derived components). A covered field that the request does not
 * carry is COMPONENT_MISSING: signing or verifying over an absent field
 * must fail, never silently use an empty value.
 */
export function componentValue(req: SignableRequest, name: string): string {
  switch (name) {
    case '@method':
      return req.method;
    case '@authority':
      return req.authority;
    case '@path':
      return req.path === '' ? '/' : req.path;
    case '@query':
      return req.query === '' ? '?' : req.query;
  }
  if (name.startsWith('@')) {
    // @target-uri, @scheme, @request-target: not part of any profile here.
    throw new SignatureError('SIGNATURE_MALFORMED', `derived component ${name} is not supported`);
  }
  if (name !== name.toLowerCase() || !/^[a-z0-9!#$%&'*+.^_`|~-]+$/.test(name)) {
    throw new SignatureError(
      'SIGNATURE_MALFORMED',
      `invalid component name ${JSON.stringify(name)}`
    );
  }
  const v = req.header(name);
  if (v === undefined)
    throw new SignatureError('COMPONENT_MISSING', `covered field "${name}" is absent`);
  // Section 2.1: strip leading/trailing whitespace; a combined multi-value
  // field is already joined with ", " by the HTTP stack.
  return v.trim();
}

/**
 * Serialises the signature parameters as the inner list that is both the
 * `Signature-Input` member value and the `@signature-params` line.
 */
export function serializeSignatureParams(
  components: readonly string[],
  params: ReadonlyArray<readonly [string, BareItem]>
): string {
  const list: InnerList = [
    components.map((c) => [c, new Map()]),
    new Map(params as Array<[string, BareItem]>),
  ];
  return serializeInnerList(list);
}

/** RFC 9421 section 2.5: one line per covered component, then `@signature-params`. */
export function signatureBase(
  req: SignableRequest,
  components: readonly string[],
  paramsText: string
): string {
  let out = '';
  for (const c of components) out += `"${c}": ${componentValue(req, c)}\n`;
  return out + `"@signature-params": ${paramsText}`;
}

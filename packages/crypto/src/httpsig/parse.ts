import { parseDictionary, serializeInnerList, type BareItem } from 'structured-headers';
import { SignatureError } from './errors.js';

/** One signature as carried by `Signature-Input` and `Signature`. */
export interface ParsedSignature {
  label: string;
  components: string[];
  /** Parameters in the order the signer listed them. */
  params: Map<string, BareItem>;
  /** The canonical serialisation of the inner list: the `@signature-params` value. */
  paramsText: string;
  signature: Uint8Array;
}

const malformed = (msg: string, cause?: unknown) =>
  new SignatureError('SIGNATURE_MALFORMED', msg, cause === undefined ? undefined : { cause });

function parseDict(name: string, value: string) {
  try {
    return parseDictionary(value);
  } catch (cause) {
    throw malformed(`${name} is not a structured-field dictionary (RFC 8941)`, cause);
  }
}

/**
 * Parses the two signature fields strictly (RFC 9421 section 4, RFC 8941
 * parsing): exactly one signature, the same label in both fields, an inner
 * list of plain strings for the components, a 64-byte-or-less byte sequence
 * for the signature. Anything else is refused rather than guessed at.
 */
export function parseSignatureFields(
  signatureInput: string | undefined,
  signature: string | undefined
): ParsedSignature {
  if (!signatureInput || !signature) {
    throw new SignatureError(
      'SIGNATURE_MISSING',
      'request is not signed (Signature and Signature-Input required)'
    );
  }
  const inputs = parseDict('Signature-Input', signatureInput);
  const sigs = parseDict('Signature', signature);
  if (inputs.size !== 1 || sigs.size !== 1) {
    throw malformed(
      `exactly one signature expected (Signature-Input has ${inputs.size}, Signature has ${sigs.size})`
    );
  }
  const [label, input] = [...inputs][0]!;
  const sig = sigs.get(label);
  if (!sig) {
    throw new SignatureError(
      'LABEL_MISMATCH',
      `Signature has no member for label "${label}" of Signature-Input`
    );
  }
  if (!Array.isArray(input[0])) throw malformed(`Signature-Input "${label}" must be an inner list`);
  const components: string[] = [];
  for (const [item, itemParams] of input[0]) {
    if (typeof item !== 'string') throw malformed('covered components must be strings');
    if (itemParams.size > 0) throw malformed(`component parameters are not supported ("${item}")`);
    if (components.includes(item)) throw malformed(`component "${item}" is covered twice`);
    components.push(item);
  }
  if (Array.isArray(sig[0]) || !(sig[0] instanceof ArrayBuffer)) {
    throw malformed(`Signature "${label}" must be a byte sequence`);
  }
  return {
    label,
    components,
    params: input[1],
    paramsText: serializeInnerList(input),
    signature: new Uint8Array(sig[0]),
  };
}

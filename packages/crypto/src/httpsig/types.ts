/**
 * The parts of an HTTP request a signature can cover, as the server saw them
 * on the wire (not re-normalised): header names lowercase.
 */
export interface SignableRequest {
  /** Uppercase method, e.g. `POST`. */
  method: string;
  /** `host[:port]` as sent in the Host header, lowercase, default port omitted. */
  authority: string;
  /** The absolute path as sent, percent-encoding untouched; `/` if empty. */
  path: string;
  /** The query including its leading `?`, or `''` when there is none. */
  query: string;
  /** Field value by lowercase name; undefined when absent. */
  header(name: string): string | undefined;
}

/** Signature parameters (RFC 9421 section 2.3) of the Sealbus profile. */
export interface SignatureParams {
  created: number;
  expires: number;
  nonce: string;
  keyid: string;
  alg: string;
  tag: string;
}

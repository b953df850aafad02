/** Every way a crypto boundary can refuse its input. Codes are stable API. */
export type CryptoErrorCode =
  | 'BAD_HEX'
  | 'BAD_LENGTH'
  | 'BAD_KEY'
  | 'BAD_SIGNATURE'
  /** A public identity token that does not decode (prefix, alphabet, length). */
  | 'BAD_TOKEN'
  /** A key binding that is not sign_pub's signature over its keys. */
  | 'BAD_BINDING'
  | 'OPEN_FAILED'
  | 'IDENTITY_NOT_FOUND'
  | 'IDENTITY_CORRUPT'
  | 'IDENTITY_PERMISSIONS'
  | 'IDENTITY_IO';

export class CryptoError extends Error {
  readonly code: CryptoErrorCode;

  constructor(code: CryptoErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** An input that does not fit the wire contract. `field` names the culprit. */
export class ValidationError extends Error {
  readonly code = 'INVALID' as const;
  readonly field: string;

  constructor(field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = new.target.name;
    this.field = field;
  }
}

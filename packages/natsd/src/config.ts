/**
 * nats-server configuration as data. The server's config language accepts
 * JSON-style quoted strings, so every string is emitted with JSON escaping and
 * no value can break out of its field. `envRef` emits a bare `$NAME`
 * reference, which the server resolves from its environment: the way to hand
 * it a secret without writing the secret into the file.
 */
export type NatsConfigValue =
  | string
  | number
  | boolean
  | EnvRef
  | NatsConfigValue[]
  | { [key: string]: NatsConfigValue | undefined };

export interface EnvRef {
  readonly envRef: string;
}

export function envRef(name: string): EnvRef {
  if (!/^[A-Z_][A-Z0-9_]*$/.test(name))
    throw new Error(`invalid environment variable name: ${name}`);
  return Object.freeze({ envRef: name });
}

function isEnvRef(v: unknown): v is EnvRef {
  return typeof v === 'object' && v !== null && 'envRef' in v;
}

function render(value: NatsConfigValue, indent: string): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error('non-finite number in nats-server config');
    return String(value);
  }
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (isEnvRef(value)) return `$${value.envRef}`;
  const inner = indent + '  ';
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    return `[\n${value.map((v) => inner + render(v, inner)).join('\n')}\n${indent}]`;
  }
  const entries = Object.entries(value).filter(([, v]) => v !== undefined) as Array<
    [string, NatsConfigValue]
  >;
  if (entries.length === 0) return '{}';
  return `{\n${entries.map(([k, v]) => `${inner}${JSON.stringify(k)}: ${render(v, inner)}`).join('\n')}\n${indent}}`;
}

/** Renders a top-level config object as nats-server config text. */
export function renderNatsConfig(config: Record<string, NatsConfigValue | undefined>): string {
  const entries = Object.entries(config).filter(([, v]) => v !== undefined) as Array<
    [string, NatsConfigValue]
  >;
  return entries.map(([k, v]) => `${JSON.stringify(k)}: ${render(v, '')}`).join('\n') + '\n';
}

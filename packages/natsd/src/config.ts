import { NatsdError } from './errors.js';

/**
 * nats-server configuration as data. Every string reaches the server exactly
 * as given and no value or key can break out of its field: strings are
 * double-quoted with only the escapes the server's lexer knows, and keys are
 * quoted raw (the lexer reads no escapes in a quoted key). `envRef` emits a
 * bare `$NAME` reference, which the server resolves from its environment: the
 * way to hand it a secret without writing the secret into the file.
 *
 * @example
 * renderNatsConfig({ port: 4222, server_name: 'n1', jetstream: { key: envRef('NATS_KEY') } });
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

const ENV_NAME = /^[A-Z_][A-Z0-9_]*$/;

export function envRef(name: string): EnvRef {
  if (typeof name !== 'string' || !ENV_NAME.test(name))
    throw new NatsdError(
      'BAD_CONFIG',
      `invalid environment variable name: ${JSON.stringify(name)}`
    );
  return Object.freeze({ envRef: name });
}

/**
 * The text to put in the environment for a `$NAME` reference to arrive as
 * exactly `value`: nats-server parses a variable's value as config text, so a
 * bare `123456` would arrive as a number, `a b` or `x,y` would not parse, and
 * `#x` would be a comment.
 *
 * @example
 * env: { ROUTE_SECRET: envValue(secret) } // config: password: envRef('ROUTE_SECRET')
 */
export function envValue(value: string): string {
  return quoteString(value);
}

function isEnvRef(v: unknown): v is EnvRef {
  return typeof v === 'object' && v !== null && 'envRef' in v;
}

// A lone surrogate has no UTF-8 form: it would reach the server as U+FFFD.
const LONE_SURROGATE = /\p{Cs}/u;

function checkText(s: string, what: string): void {
  if (typeof s !== 'string') throw new NatsdError('BAD_CONFIG', `${what} is not a string`);
  if (LONE_SURROGATE.test(s))
    throw new NatsdError('BAD_CONFIG', `${what} holds a lone UTF-16 surrogate`);
}

/**
 * A double-quoted string. nats-server's lexer knows only \\ \" \n \r \t and
 * \xXX (JSON's \u, \b and \f are parse errors), so every other control
 * character is written as \xXX; everything else is written as itself.
 */
function quoteString(s: string): string {
  checkText(s, 'a string value');
  let out = '"';
  for (const c of s) {
    const code = c.charCodeAt(0);
    if (c === '\\' || c === '"') out += `\\${c}`;
    else if (c === '\n') out += '\\n';
    else if (c === '\r') out += '\\r';
    else if (c === '\t') out += '\\t';
    else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, '0')}`;
    else out += c;
  }
  return out + '"';
}

/**
 * A quoted key. The lexer takes a quoted key up to the next quote of the same
 * kind and reads no escapes (`"a\"b"` is the key `a\` followed by text the
 * parser then reads as config), so a key is written raw between the quote it
 * does not contain; a key holding both kinds, or NUL, cannot be written at all.
 */
function quoteKey(k: string): string {
  checkText(k, 'a key');
  if (k.includes('\0'))
    throw new NatsdError(
      'BAD_CONFIG',
      'a key cannot hold NUL (nats-server reads it as end of file)'
    );
  if (!k.includes('"')) return `"${k}"`;
  if (!k.includes("'")) return `'${k}'`;
  throw new NatsdError(
    'BAD_CONFIG',
    `a key cannot hold both ' and " (nats-server has no escapes in keys): ${JSON.stringify(k)}`
  );
}

function entriesOf(value: { [key: string]: NatsConfigValue | undefined }) {
  return Object.entries(value).filter(([, v]) => v !== undefined) as Array<
    [string, NatsConfigValue]
  >;
}

/**
 * `scopes` are the key sets of the maps enclosing a value: the server looks a
 * `$NAME` up in those before the environment, so a key of the same name
 * (an account named like the variable, say) would silently replace the secret.
 */
function render(value: NatsConfigValue, indent: string, scopes: ReadonlySet<string>[]): string {
  if (typeof value === 'string') return quoteString(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value))
      throw new NatsdError('BAD_CONFIG', 'non-finite number in nats-server config');
    // String() writes 1e21 as "1e+21", which nats-server reads as a string.
    if (/e/i.test(String(value)))
      throw new NatsdError('BAD_CONFIG', `number ${value} has no plain form in nats-server config`);
    return String(value);
  }
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (isEnvRef(value)) {
    const name = envRef(value.envRef).envRef;
    if (scopes.some((s) => s.has(name)))
      throw new NatsdError(
        'BAD_CONFIG',
        `$${name} would resolve to the config key ${name} around it, not the environment`
      );
    return `$${name}`;
  }
  if (typeof value !== 'object' || value === null)
    throw new NatsdError('BAD_CONFIG', `cannot render ${typeof value} in nats-server config`);
  const inner = indent + '  ';
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    return `[\n${value.map((v) => inner + render(v, inner, scopes)).join('\n')}\n${indent}]`;
  }
  const entries = entriesOf(value);
  if (entries.length === 0) return '{}';
  const here = [...scopes, new Set(entries.map(([k]) => k))];
  return `{\n${entries.map(([k, v]) => `${inner}${quoteKey(k)}: ${render(v, inner, here)}`).join('\n')}\n${indent}}`;
}

/** Renders a top-level config object as nats-server config text. */
export function renderNatsConfig(config: Record<string, NatsConfigValue | undefined>): string {
  const entries = entriesOf(config);
  const top = [new Set(entries.map(([k]) => k))];
  return entries.map(([k, v]) => `${quoteKey(k)}: ${render(v, '', top)}`).join('\n') + '\n';
}

import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { envRef, envValue, renderNatsConfig, type NatsConfigValue } from './config.js';
import { NatsdError } from './errors.js';
import {
  ConnectError,
  monitor,
  natsConnect,
  natsInfo,
  startNats,
  tempDir,
  type TempDir,
  type TestServer,
} from './test-support.js';

const DEFAULT_MAX_PAYLOAD = 1_048_576;
/** What a value that breaks out of its field would like to set. */
const INJECT = 'max_payload: 4096';

let dir: TempDir;
let incFile: string;

/** Strings that try to end their field and start another, for values and keys alike. */
function hostile(): string[] {
  return [
    'plain',
    'double " quote',
    "single ' quote",
    'back\\slash',
    'ends with a backslash\\',
    '\\"',
    '\\\\"',
    'new\nline',
    `x"\n${INJECT}\n#`,
    `x'\n${INJECT}\n#`,
    `x"\r\n${INJECT}\r\n"y`,
    '}',
    '{',
    `"}\n${INJECT}\n{"`,
    // leaves a block, sets a top-level option, and reopens the block as it was
    `x"\n}\n${INJECT}\nauthorization: {\nuser: "u"\npassword: "x`,
    '}}}} ]]]',
    '# hash comment',
    '// slash comment',
    '/* block comment */',
    '$HOME',
    '$SB_HOSTILE_VAR',
    '${HOME}',
    '$',
    'include x',
    `include "${incFile}"`,
    `x"\ninclude "${incFile}"\n#`,
    `x"\ninclude ${incFile}\n#`,
    // the key the old renderer (JSON.stringify keys) let out into the accounts map
    'a": {}, evil: { users: [ {user: evil, password: evil} ] }, "b',
    'tab\there',
    'controls \u0001\u0002\u001b[31m\u007f\u0008\u000c',
    'nul \u0000 byte',
    'é ü 漢字 😀 \u2028\u2029 \u200b',
    'a: b, c: d',
    '[1, 2]',
    'true',
    '123',
    '-1',
    '1e5',
    '10MB',
    ('"\\\n}{#$ ' + 'x').repeat(2_000),
  ];
}

/** A renderer that concatenates strings, as a control: the same input breaks out of it. */
function naiveRender(config: Record<string, NatsConfigValue>): string {
  const one = (v: NatsConfigValue): string => {
    if (typeof v === 'string') return `"${v}"`;
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    if (Array.isArray(v)) return `[${v.map(one).join(', ')}]`;
    if ('envRef' in v) return `$${String(v.envRef)}`;
    return `{\n${naiveRender(v as Record<string, NatsConfigValue>)}\n}`;
  };
  return Object.entries(config)
    .map(([k, v]) => `${k}: ${one(v!)}`)
    .join('\n');
}

/** Keys nats-server has no way to read: both quote kinds, or NUL. */
const unwritableKey = (s: string) => (s.includes('"') && s.includes("'")) || s.includes('\0');

/**
 * A config holding every hostile string as a key (an account name, with one
 * user `k<i>`) and as a value (the password of user `v<i>`), and as much of
 * them as a server name may hold (no spaces).
 */
function hostileConfig(port: number, httpPort: number) {
  const values = hostile();
  const keys = values.filter((k) => !unwritableKey(k));
  const serverName = values.join('|').replaceAll(' ', '_');
  const accounts: Record<string, NatsConfigValue> = {};
  keys.forEach((k, i) => (accounts[k] = { users: [{ user: `k${i}`, password: 'pw' }] }));
  accounts.VALUES = { users: values.map((v, i) => ({ user: `v${i}`, password: v })) };
  const config: Record<string, NatsConfigValue> = {
    host: '127.0.0.1',
    port,
    http: `127.0.0.1:${httpPort}`,
    server_name: serverName,
    max_control_line: 262_144,
    accounts,
  };
  return { values, keys, serverName, config };
}

/** Everything that must hold if no string left its field; the list of what did not. */
async function checkIntact(server: TestServer, h: ReturnType<typeof hostileConfig>) {
  const wrong: string[] = [];
  const probe = await natsConnect({ port: server.port, user: 'k0', pass: 'pw' });
  probe.close();
  if (probe.info.server_name !== h.serverName) wrong.push('server_name');
  if (probe.info.max_payload !== DEFAULT_MAX_PAYLOAD)
    wrong.push(`max_payload ${String(probe.info.max_payload)}`);
  const accountz = await monitor(server.port2, '/accountz');
  const names = new Set(accountz.accounts as string[]);
  const expected = new Set([...h.keys, 'VALUES', '$G', '$SYS']);
  for (const n of names) if (!expected.has(n)) wrong.push(`extra account ${JSON.stringify(n)}`);
  for (const n of expected) if (!names.has(n)) wrong.push(`missing account ${JSON.stringify(n)}`);
  const open = [];
  try {
    for (const [i, v] of h.values.entries()) {
      const c = await natsConnect({ port: server.port, user: `v${i}`, pass: v }).catch(() => null);
      if (c) c.close();
      else wrong.push(`password ${i} ${JSON.stringify(v.slice(0, 40))} refused`);
      const bad = await natsConnect({ port: server.port, user: `v${i}`, pass: v + '!' }).catch(
        () => null
      );
      if (bad) {
        bad.close();
        wrong.push(`password ${i} + '!' accepted`);
      }
    }
    for (const i of h.keys.keys()) {
      const c = await natsConnect({ port: server.port, user: `k${i}`, pass: 'pw' }).catch(
        () => null
      );
      if (c) open.push(c);
      else wrong.push(`user k${i} refused`);
    }
    const connz = await monitor(server.port2, '/connz?auth=true&limit=10000');
    const accountOf = new Map(
      (connz.connections as Array<{ authorized_user?: string; account?: string }>).map((c) => [
        c.authorized_user,
        c.account,
      ])
    );
    h.keys.forEach((k, i) => {
      if (accountOf.has(`k${i}`) && accountOf.get(`k${i}`) !== k) wrong.push(`account of k${i}`);
    });
    const evil = await natsConnect({ port: server.port, user: 'evil', pass: 'evil' }).catch(
      () => null
    );
    if (evil) {
      evil.close();
      wrong.push('injected user evil logged in');
    }
  } finally {
    for (const c of open) c.close();
  }
  return wrong;
}

describe('renderNatsConfig against a real nats-server', { timeout: 60_000 }, () => {
  before(async () => {
    dir = await tempDir('natsd-config-');
    incFile = join(dir.path, 'inc.conf');
    // an include that took effect would show in INFO
    await writeFile(incFile, `${INJECT}\n`);
  });
  after(async () => {
    await dir.remove();
  });

  test('no hostile value or key leaves its field; each arrives intact', async () => {
    let h: ReturnType<typeof hostileConfig> | undefined;
    // were a quoted $NAME expanded, these would show
    const env = { HOME: '/expanded', SB_HOSTILE_VAR: 'expanded' };
    const server = await startNats(
      dir.path,
      (port, httpPort) => {
        h = hostileConfig(port, httpPort);
        return h.config;
      },
      { env }
    );
    try {
      assert.deepEqual(await checkIntact(server, h!), []);
    } finally {
      await server.proc.stop();
    }
  });

  test('control: the same strings concatenated into the file break out', async () => {
    // One server per string, as a password: how each fares in a naive file.
    const fate = { intact: 0, refused: 0, mangled: 0, injected: 0 };
    for (const v of hostile()) {
      let server: TestServer;
      try {
        server = await startNats(dir.path, (port) =>
          naiveRender({ host: '127.0.0.1', port, authorization: { user: 'u', password: v } })
        );
      } catch {
        fate.refused++;
        continue;
      }
      try {
        const info = await natsInfo(server.port);
        const c = await natsConnect({ port: server.port, user: 'u', pass: v }).catch(() => null);
        c?.close();
        if (info.max_payload !== DEFAULT_MAX_PAYLOAD) fate.injected++;
        else if (c) fate.intact++;
        else fate.mangled++;
      } finally {
        await server.proc.stop();
      }
    }
    assert.ok(fate.injected >= 1, `a directive took effect: ${JSON.stringify(fate)}`);
    assert.ok(fate.refused + fate.mangled >= 10, JSON.stringify(fate));
  });

  test('one breakout, side by side: naive sets max_payload, renderNatsConfig does not', async () => {
    const name = 'x"\nmax_payload:4096\n#';
    const naive = await startNats(dir.path, (port) =>
      naiveRender({ host: '127.0.0.1', port, server_name: name })
    );
    try {
      const c = await natsConnect({ port: naive.port });
      c.close();
      assert.equal(c.info.max_payload, 4096, 'the injected directive took effect');
      assert.equal(c.info.server_name, 'x');
    } finally {
      await naive.proc.stop();
    }
    const safe = await startNats(dir.path, (port) => ({
      host: '127.0.0.1',
      port,
      server_name: name,
    }));
    try {
      const c = await natsConnect({ port: safe.port });
      c.close();
      assert.equal(c.info.max_payload, DEFAULT_MAX_PAYLOAD);
      assert.equal(c.info.server_name, name);
    } finally {
      await safe.proc.stop();
    }
  });

  test('a key cannot open another account (JSON-quoted keys, as rendered before, could)', async () => {
    const key = 'a": {}, evil: { users: [ {user: evil, password: evil} ] }, "b';
    const accounts = { [key]: { users: [{ user: 'k', password: 'pw' }] } };
    // the previous renderer: JSON.stringify for keys, which the server reads without escapes
    const before = (port: number) =>
      `host: "127.0.0.1"\nport: ${port}\naccounts: {\n  ${JSON.stringify(key)}: ` +
      `{ users: [ { user: "k", password: "pw" } ] }\n}\n`;
    for (const [how, make] of [
      ['before', before],
      ['now', (port: number) => ({ host: '127.0.0.1', port, accounts })],
    ] as const) {
      const server = await startNats(dir.path, make);
      try {
        const evil = await natsConnect({ port: server.port, user: 'evil', pass: 'evil' }).then(
          (c) => (c.close(), true),
          () => false
        );
        assert.equal(evil, how === 'before', `${how}: the injected user logs in`);
      } finally {
        await server.proc.stop();
      }
    }
  });

  test('what cannot be written is refused, not mangled', () => {
    const refuse = (config: Record<string, NatsConfigValue>) =>
      assert.throws(
        () => renderNatsConfig(config),
        (e) => e instanceof NatsdError && e.code === 'BAD_CONFIG'
      );
    for (const k of hostile().filter(unwritableKey)) refuse({ accounts: { [k]: {} } });
    refuse({ accounts: { 'a"b\'c': {} } });
    refuse({ server_name: 'lone \ud800 surrogate' });
    refuse({ accounts: { 'lone \udc00': {} } });
    refuse({ port: Number.NaN });
    refuse({ port: Infinity });
    refuse({ x: null as unknown as string });
  });
});

describe('envRef against a real nats-server', { timeout: 60_000 }, () => {
  let envDir: TempDir;
  before(async () => {
    envDir = await tempDir('natsd-env-');
  });
  after(async () => {
    await envDir.remove();
  });

  test('rejects names that are not plain variable names', () => {
    for (const bad of [
      '',
      'lower',
      '1ABC',
      'A-B',
      'A B',
      '$A',
      'A\n',
      'A}',
      'A.B',
      'É',
      'A\u0000',
      7 as unknown as string,
    ])
      assert.throws(
        () => envRef(bad),
        (e) => e instanceof NatsdError && e.code === 'BAD_CONFIG',
        JSON.stringify(bad)
      );
    for (const good of ['A', '_X', 'A1_B', 'SEALBUS_NATS_KEY'])
      assert.deepEqual(envRef(good), { envRef: good });
    // an EnvRef built by hand is checked when rendered
    assert.throws(
      () => renderNatsConfig({ password: { envRef: 'X\ninclude /etc/passwd' } }),
      (e) => e instanceof NatsdError && e.code === 'BAD_CONFIG'
    );
  });

  test('$NAME resolves from the child environment; envValue delivers any string intact', async () => {
    const secrets = hostile().filter((s) => s.length < 1_000);
    const env: Record<string, string> = {};
    secrets.forEach((s, i) => (env[`SB_SECRET_${i}`] = envValue(s)));
    const server = await startNats(
      envDir.path,
      (port) => ({
        host: '127.0.0.1',
        port,
        authorization: {
          users: secrets.map((_, i) => ({ user: `u${i}`, password: envRef(`SB_SECRET_${i}`) })),
        },
      }),
      { env }
    );
    try {
      const text = renderNatsConfig({ password: envRef('SB_SECRET_0') });
      assert.equal(text, '"password": $SB_SECRET_0\n', 'the secret is not in the file');
      for (const [i, s] of secrets.entries()) {
        const c = await natsConnect({ port: server.port, user: `u${i}`, pass: s });
        c.close();
        await assert.rejects(
          natsConnect({ port: server.port, user: `u${i}`, pass: s + 'x' }),
          ConnectError
        );
      }
    } finally {
      await server.proc.stop();
    }
  });

  test('control: a raw secret in the environment is parsed as config, not taken as is', async () => {
    // all digits: the server reads a number and refuses the password field
    await assert.rejects(
      startNats(
        envDir.path,
        (port) => ({
          host: '127.0.0.1',
          port,
          authorization: { user: 'u', password: envRef('SB_SECRET') },
        }),
        { env: { SB_SECRET: '123456' } }
      ),
      (e) => e instanceof NatsdError && e.code === 'START_FAILED'
    );
  });

  test('the parent environment does not reach the child', async () => {
    process.env.SB_PARENT_ONLY = envValue('from the parent');
    try {
      await assert.rejects(
        startNats(envDir.path, (port) => ({
          host: '127.0.0.1',
          port,
          authorization: { user: 'u', password: envRef('SB_PARENT_ONLY') },
        })),
        (e) =>
          e instanceof NatsdError && e.code === 'START_FAILED' && /can not be found/.test(e.message)
      );
    } finally {
      delete process.env.SB_PARENT_ONLY;
    }
  });

  test('a key of the same name around a $NAME is refused (the server would use it instead)', async () => {
    const shadowed = (port: number) => ({
      host: '127.0.0.1',
      port,
      accounts: {
        SB_SECRET: { users: [{ user: 'other', password: 'other' }] },
        A: { users: [{ user: 'u', password: envRef('SB_SECRET') }] },
      },
    });
    assert.throws(
      () => renderNatsConfig(shadowed(4222)),
      (e) => e instanceof NatsdError && e.code === 'BAD_CONFIG'
    );
    // control: written anyway, the server does not use the environment's secret
    const written = (port: number) =>
      renderNatsConfig({ ...shadowed(port), accounts: {} }).replace(
        '"accounts": {}',
        '"accounts": {\n  "SB_SECRET": { "users": [ { "user": "other", "password": "other" } ] }\n' +
          '  "A": { "users": [ { "user": "u", "password": $SB_SECRET } ] }\n}'
      );
    let server: TestServer | undefined;
    try {
      server = await startNats(envDir.path, written, { env: { SB_SECRET: envValue('s3cret') } });
    } catch (err) {
      assert.ok(err instanceof NatsdError && err.code === 'START_FAILED', String(err));
      return;
    }
    try {
      await assert.rejects(natsConnect({ port: server.port, user: 'u', pass: 's3cret' }));
    } finally {
      await server.proc.stop();
    }
  });
});

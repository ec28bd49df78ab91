/**
 * The extension backend without namespaces: option checks, what each
 * command gets (variables, stdin), output bounds, a hostile lease's text
 * kept off the command line, and the retry of a failed command.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createExtensionBackend } from '../../src/backend/extension/index.js';
import { runShell, STDOUT_LIMIT } from '../../src/backend/extension/shell-command.js';
import { BackendOptionError, BackendUnavailableError } from '../../src/backend/errors.js';
import { backendContext } from '../helpers/backend-context.js';
import { makeLease } from '../helpers/leases.js';

const cfg = (backend: Record<string, unknown>) => ({ Network: '10.7.0.0/16', Backend: { Type: 'extension', ...backend } });
const ext = (l: ReturnType<typeof makeLease>, data?: unknown) => ({ ...l, attrs: { ...l.attrs, backendType: 'extension', ...(data !== undefined ? { backendData: data } : {}) } });

test('commands must be strings; PreStartupCommand\'s output is the BackendData; a failing one stops the start with its exit code and stderr', async () => {
  await assert.rejects(createExtensionBackend(backendContext(cfg({ SubnetAddCommand: 42 }))), BackendOptionError);
  const b = await createExtensionBackend(backendContext(cfg({ PreStartupCommand: 'echo "  hello world  "' })));
  assert.deepEqual(await b.prepare(null), { backendType: 'extension', backendData: 'hello world' });
  const none = await createExtensionBackend(backendContext(cfg({})));
  assert.deepEqual(await none.prepare(null), { backendType: 'extension' });
  const bad = await createExtensionBackend(backendContext(cfg({ PreStartupCommand: 'echo oops >&2; exit 7' })));
  await assert.rejects(bad.prepare(null), (e: Error) => e instanceof BackendUnavailableError && /exit 7: oops/.test(e.message));
});

test('SubnetAddCommand gets SUBNET and PUBLIC_IP, and the lease\'s BackendData only on stdin; a failed one is retried at the next event', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fts-ext-'));
  const b = await createExtensionBackend(
    backendContext(cfg({ SubnetAddCommand: `[ -e ${dir}/ok ] || exit 4; read -r d; printf '%s|%s|%s\\n' "$SUBNET" "$PUBLIC_IP" "$d" >> ${dir}/calls` })),
  );
  await b.start(makeLease('10.7.1.0/24', '192.0.2.1'));
  // Hostile BackendData: shell syntax that must stay data.
  const hostile = '$(touch /tmp/fts-pwned); `id`; "quoted"';
  await b.handleEvents([{ type: 'added', lease: ext(makeLease('10.7.2.0/24', '192.0.2.2'), hostile) }]);
  assert.equal(await readFile(join(dir, 'calls'), 'utf8').catch(() => ''), '', 'failed while ok is missing');
  await writeFile(join(dir, 'ok'), '');
  await b.handleEvents([{ type: 'added', lease: ext(makeLease('10.7.3.0/24', '192.0.2.3'), 'three') }]);
  const calls = (await readFile(join(dir, 'calls'), 'utf8')).trim().split('\n');
  assert.deepEqual(calls, [`10.7.2.0/24|192.0.2.2|${hostile}`, '10.7.3.0/24|192.0.2.3|three']);
  // A lease of another type, or BackendData that is not a string, runs nothing.
  await b.handleEvents([{ type: 'added', lease: { ...makeLease('10.7.4.0/24', '192.0.2.4'), attrs: { publicIP: '192.0.2.4', publicIPv6: null, backendType: 'vxlan' } } }]);
  await b.handleEvents([{ type: 'added', lease: ext(makeLease('10.7.5.0/24', '192.0.2.5'), { not: 'a string' }) }]);
  assert.equal((await readFile(join(dir, 'calls'), 'utf8')).trim().split('\n').length, 2);
  await b.stop();
});

test('command output is bounded; a timeout kills the command\'s whole process group', async () => {
  const big = await runShell(`head -c ${STDOUT_LIMIT * 4} /dev/zero | tr '\\0' x`, {}, '', 10_000);
  assert.equal(big.code, 0);
  assert.equal(big.stdout.length, STDOUT_LIMIT);
  const t0 = Date.now();
  const hung = await runShell('sleep 30 & sleep 30; echo never', {}, '', 300);
  assert.ok(hung.timedOut && hung.code === null && Date.now() - t0 < 5000);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger, setLogLevel, setLogSink } from '../../src/log.js';

test('one line per event with level, component and key=value fields; secrets redacted', () => {
  const lines: string[] = [];
  setLogSink((l) => lines.push(l));
  setLogLevel('info');
  const log = createLogger('test');
  log.info('lease acquired\nsecond line', { subnet: '10.5.1.0/24', note: 'has spaces', password: 'hunter2', etcdKeyfile: '/k.pem', psk: 'abc', token: 't' });
  log.debug('hidden');
  log.child('udp').warn('dropped', { error: new Error('bad\npacket') });
  assert.equal(lines.length, 2);
  assert.match(lines[0]!, /^INFO  \d{4}-\d\d-\d\dT[\d:.]+Z \[test\] lease acquired second line subnet=10\.5\.1\.0\/24 note="has spaces" password=<redacted> etcdKeyfile=<redacted> psk=<redacted> token=<redacted>$/);
  assert.ok(!lines.join('\n').includes('hunter2'));
  assert.match(lines[1]!, /^WARN  .* \[test\/udp\] dropped error="bad packet"$/);
  setLogSink((l) => process.stderr.write(l + '\n'));
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EtcdStore } from '../../src/subnet/etcd-store.js';

test('credentials in an endpoint URL are refused with a pointer to the flags, and never echoed', () => {
  for (const url of ['http://root:s3cr3t@127.0.0.1:2379', 'https://s3cr3t@etcd.example:2379/']) {
    assert.throws(
      () => new EtcdStore({ endpoints: ['http://127.0.0.1:2379', url].filter((u) => u.startsWith(url.slice(0, 5))) }),
      (e: Error) => /credentials in its URL/.test(e.message) && /--etcd-username and --etcd-password/.test(e.message) && !e.message.includes('s3cr3t'),
      url,
    );
  }
});

test('ordinary endpoints are still accepted', async () => {
  const s = new EtcdStore({ endpoints: ['http://127.0.0.1:1', 'http://127.0.0.1:2/'] });
  assert.match(s.description, /^etcd http:\/\/127\.0\.0\.1:1,http:\/\/127\.0\.0\.1:2$/);
  await s.close();
});

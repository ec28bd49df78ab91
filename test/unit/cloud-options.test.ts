/**
 * Options of the cloud backends: flannel's (RouteTableID as a string or a
 * list; AccessKeyID/AccessKeySecret or the environment) and our endpoint
 * overrides (option first, then the variable), with clear errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAwsVpcOptions } from '../../src/backend/aws-vpc/index.js';
import { parseGceOptions } from '../../src/backend/gce/index.js';
import { parseAliVpcOptions } from '../../src/backend/ali-vpc/index.js';
import { gceRouteName } from '../../src/backend/gce/compute-routes.js';

test('aws-vpc: RouteTableID is a string or a list of strings; anything else is a clear error', () => {
  assert.deepEqual(parseAwsVpcOptions({ Type: 'aws-vpc' }).routeTables, []);
  assert.deepEqual(parseAwsVpcOptions({ RouteTableID: 'rtb-1' }).routeTables, ['rtb-1']);
  assert.deepEqual(parseAwsVpcOptions({ routetableid: ['rtb-1', 'rtb-2'] }).routeTables, ['rtb-1', 'rtb-2'], 'Go field names match case-insensitively');
  assert.throws(() => parseAwsVpcOptions({ RouteTableID: 7 }), /RouteTableID must be a route table ID or a list of them, got 7/);
  assert.throws(() => parseAwsVpcOptions({ RouteTableID: ['rtb-1', 2] }), /RouteTableID must be/);
});

test('endpoints: the host\'s environment, else the cloud\'s own address; never from the shared config; https for APIs unless the host opts in; no credentials in URLs', () => {
  const saved = { ...process.env };
  try {
    delete process.env.AWS_ENDPOINT_URL_EC2;
    delete process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT;
    assert.equal(parseAwsVpcOptions({}).metadataEndpoint, 'http://169.254.169.254');
    assert.equal(parseAwsVpcOptions({}).ec2Endpoint, undefined, 'the SDK picks the regional endpoint');
    process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT = 'http://127.0.0.1:9/';
    process.env.AWS_ENDPOINT_URL_EC2 = 'https://ec2.internal.example';
    assert.equal(parseAwsVpcOptions({}).metadataEndpoint, 'http://127.0.0.1:9');
    assert.equal(parseAwsVpcOptions({}).ec2Endpoint, 'https://ec2.internal.example');
    // Whoever writes the shared config must not choose where this host's credentials go (reproduced: tokens sent to such an endpoint).
    for (const [parse, option] of [[parseAwsVpcOptions, 'EC2Endpoint'], [parseAwsVpcOptions, 'MetadataEndpoint'], [parseGceOptions, 'ComputeEndpoint'], [parseGceOptions, 'MetadataEndpoint']] as const) {
      assert.throws(() => parse({ [option]: 'http://192.0.2.66:8080' }), new RegExp(`${option} is a host setting, not read from the shared network config`), option);
    }
    assert.throws(() => parseAliVpcOptions({ VPCEndpoint: 'http://192.0.2.66' }, { ACCESS_KEY_ID: 'id', ACCESS_KEY_SECRET: 'secret' }), /VPCEndpoint is a host setting.*set ALICLOUD_VPC_ENDPOINT/);
    process.env.AWS_ENDPOINT_URL_EC2 = 'https://user:pw@ec2.example';
    assert.throws(() => parseAwsVpcOptions({}), /must not carry credentials/);
    process.env.AWS_ENDPOINT_URL_EC2 = 'https://ec2.internal.example';
    process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT = 'ftp://x';
    assert.throws(() => parseAwsVpcOptions({}), /an http:\/\/ or https:\/\/ URL/);
    process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT = 'http://127.0.0.1:9/';
    // A plain-http API endpoint only when the host says so.
    process.env.AWS_ENDPOINT_URL_EC2 = 'http://127.0.0.1:8443';
    delete process.env.FLANNEL_CLOUD_ALLOW_HTTP;
    assert.throws(() => parseAwsVpcOptions({}), /plain http; .* unless FLANNEL_CLOUD_ALLOW_HTTP=1/);
    process.env.FLANNEL_CLOUD_ALLOW_HTTP = '1';
    assert.equal(parseAwsVpcOptions({}).ec2Endpoint, 'http://127.0.0.1:8443');
    delete process.env.FLANNEL_CLOUD_ALLOW_HTTP;

    process.env.GCE_METADATA_HOST = '127.0.0.1:8080';
    assert.equal(parseGceOptions({}).metadataEndpoint, 'http://127.0.0.1:8080', 'GCE_METADATA_HOST is host:port, as Google\'s libraries read it');
    delete process.env.GCE_METADATA_HOST;
    assert.equal(parseGceOptions({}).metadataEndpoint, 'http://169.254.169.254');
    assert.equal(parseGceOptions({}).routeLimit, 100);

    const ali = parseAliVpcOptions({}, { ACCESS_KEY_ID: 'id', ACCESS_KEY_SECRET: 'secret' });
    assert.equal(ali.metadataEndpoint, 'http://100.100.100.200');
    assert.equal(ali.routeLimit, 50);
  } finally {
    process.env = saved;
  }
});

test('ali-vpc: keys from the config, else from ACCESS_KEY_ID/ACCESS_KEY_SECRET; neither is a clear error that prints no secret', () => {
  assert.equal(parseAliVpcOptions({ AccessKeyID: 'a', AccessKeySecret: 'b' }, {}).accessKeyId, 'a');
  assert.equal(parseAliVpcOptions({ AccessKeyID: 'a' }, { ACCESS_KEY_ID: 'e', ACCESS_KEY_SECRET: 'f' }).accessKeyId, 'e', 'half a pair in the config: both from the environment, as flannel');
  assert.throws(() => parseAliVpcOptions({ AccessKeyID: 'a' }, {}), (e: Error) => /no Aliyun credentials/.test(e.message) && !e.message.includes('"a"'));
  assert.throws(() => parseAliVpcOptions({ AccessKeySecret: 12345 }, {}), (e: Error) => /AccessKeySecret must be a string \(value not shown\)/.test(e.message) && !e.message.includes('12345'));
});

test('cloud error codes reach metric labels only from a fixed list', async () => {
  const { errorLabel, CloudCounters } = await import('../../src/backend/cloud/counters.js');
  assert.equal(errorLabel('RequestLimitExceeded'), 'RequestLimitExceeded');
  assert.equal(errorLabel('metadata_503'), 'metadata_503');
  for (const hostile of ['x"} 1\nevil{a="', 'metadata_5030', 'SomethingNew', '']) assert.equal(errorLabel(hostile), 'other');
  const c = new CloudCounters('aws-vpc');
  c.error('a"b\nc');
  assert.match(c.render(), /flannel_cloud_api_errors_total\{backend="aws-vpc",code="other"\} 1/);
});

test('metadata replies are bounded in size', async () => {
  const { boundedText, METADATA_BODY_LIMIT } = await import('../../src/backend/cloud/http.js');
  assert.equal(await boundedText(new Response('i-0123'), 'IMDS'), 'i-0123');
  const big = new ReadableStream({
    pull(ctl) {
      ctl.enqueue(new Uint8Array(16 * 1024));
    },
  });
  await assert.rejects(boundedText(new Response(big), 'IMDS'), new RegExp(`more than the ${METADATA_BODY_LIMIT} bytes`));
  await assert.rejects(boundedText(new Response('x', { headers: { 'content-length': String(10 ** 9) } }), 'IMDS'), /1000000000 bytes/);
});

test('gce route names as flannel makes them', () => {
  assert.equal(gceRouteName('10.20.5.0/24'), 'flannel-10-20-5-0-24');
});

test('EC2 replies are bounded in size: the raw body is cut before the SDK buffers it', async () => {
  const { createServer } = await import('node:http');
  const { EC2Client, DescribeRouteTablesCommand } = await import('@aws-sdk/client-ec2');
  const { boundAwsResponses, API_BODY_LIMIT } = await import('../../src/backend/cloud/body-limit.js');
  let sent = 0;
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/xml' });
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    const pump = () => {
      while (sent < 4 * API_BODY_LIMIT) {
        sent += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
      res.end();
    };
    res.on('close', () => res.destroy());
    pump();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  try {
    const client = new EC2Client({ region: 'eu-west-1', endpoint: `http://127.0.0.1:${(server.address() as { port: number }).port}`, maxAttempts: 1, credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'x' } });
    boundAwsResponses(client.middlewareStack as never, 'EC2');
    await assert.rejects(client.send(new DescribeRouteTablesCommand({})), /EC2 answered with more than 8388608 bytes/);
    assert.ok(sent < 4 * API_BODY_LIMIT, `the reply was cut off, not read to its end (${sent} bytes sent)`);
    client.destroy();
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

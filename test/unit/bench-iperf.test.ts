import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseIperfJson } from '../../bench/iperf.js';

// Recorded with iperf3 3.12 between two namespaces on a veth pair (intervals
// and the session cookie trimmed).
const TCP_SAMPLE = String.raw`{"start": {"connected": [{"socket": 5, "local_host": "192.0.2.1", "local_port": 55644, "remote_host": "192.0.2.2", "remote_port": 5201}], "version": "iperf 3.12", "system_info": "Linux vm 6.18.44-fc-v782 #1 SMP PREEMPT_DYNAMIC @0 x86_64", "timestamp": {"time": "Mon, 23 Nov 2026 10:35:06 GMT", "timesecs": 1795430106}, "connecting_to": {"host": "192.0.2.2", "port": 5201}, "tcp_mss_default": 1448, "target_bitrate": 0, "sock_bufsize": 0, "sndbuf_actual": 16384, "rcvbuf_actual": 131072, "test_start": {"protocol": "TCP", "num_streams": 1, "blksize": 131072, "omit": 0, "duration": 1, "bytes": 0, "blocks": 0, "reverse": 0, "tos": 0, "target_bitrate": 0}}, "intervals": [], "end": {"streams": [{"sender": {"socket": 5, "start": 0, "end": 1.000059, "seconds": 1.000059, "bytes": 2368339968, "bits_per_second": 18945601953.484745, "retransmits": 297, "max_snd_cwnd": 356208, "max_snd_wnd": 5386240, "max_rtt": 37, "min_rtt": 37, "mean_rtt": 37, "sender": true}, "receiver": {"socket": 5, "start": 0, "end": 1.000108, "seconds": 1.000059, "bytes": 2368339968, "bits_per_second": 18944673719.238323, "sender": true}}], "sum_sent": {"start": 0, "end": 1.000059, "seconds": 1.000059, "bytes": 2368339968, "bits_per_second": 18945601953.484745, "retransmits": 297, "sender": true}, "sum_received": {"start": 0, "end": 1.000108, "seconds": 1.000108, "bytes": 2368339968, "bits_per_second": 18944673719.238323, "sender": true}, "cpu_utilization_percent": {"host_total": 93.1592556610119, "host_user": 0.407044814787136, "host_system": 92.75231048999825, "remote_total": 59.72711465643863, "remote_user": 1.7044835305916148, "remote_system": 58.0224311512438}, "sender_tcp_congestion": "bbr", "receiver_tcp_congestion": "bbr"}}`;
const UDP_SAMPLE = String.raw`{"start": {"connected": [{"socket": 5, "local_host": "192.0.2.1", "local_port": 40226, "remote_host": "192.0.2.2", "remote_port": 5201}], "version": "iperf 3.12", "system_info": "Linux vm 6.18.44-fc-v782 #1 SMP PREEMPT_DYNAMIC @0 x86_64", "timestamp": {"time": "Mon, 23 Nov 2026 10:35:08 GMT", "timesecs": 1795430108}, "connecting_to": {"host": "192.0.2.2", "port": 5201}, "target_bitrate": 0, "sock_bufsize": 0, "sndbuf_actual": 212992, "rcvbuf_actual": 212992, "test_start": {"protocol": "UDP", "num_streams": 1, "blksize": 1400, "omit": 0, "duration": 1, "bytes": 0, "blocks": 0, "reverse": 0, "tos": 0, "target_bitrate": 0}}, "intervals": [], "end": {"streams": [{"udp": {"socket": 5, "start": 0, "end": 1.000329, "seconds": 1.000329, "bytes": 230832000, "bits_per_second": 1846048649.9941518, "jitter_ms": 0.0014448211649378678, "lost_packets": 97347, "packets": 164880, "lost_percent": 59.041120815138285, "out_of_order": 0, "sender": true}}], "sum": {"start": 0, "end": 1.000466, "seconds": 1.000466, "bytes": 230832000, "bits_per_second": 1846048649.9941518, "jitter_ms": 0.0014448211649378678, "lost_packets": 97347, "packets": 164880, "lost_percent": 59.041120815138285, "sender": true}, "sum_sent": {"start": 0, "end": 1.000329, "seconds": 1.000329, "bytes": 230832000, "bits_per_second": 1846048649.9941518, "jitter_ms": 0, "lost_packets": 0, "packets": 164880, "lost_percent": 0, "sender": true}, "sum_received": {"start": 0, "end": 1.000466, "seconds": 1.000466, "bytes": 93861600, "bits_per_second": 750543046.940126, "jitter_ms": 0.0014448211649378678, "lost_packets": 97347, "packets": 164391, "lost_percent": 59.041120815138285, "sender": false}, "cpu_utilization_percent": {"host_total": 67.12352453199803, "host_user": 4.505212237514118, "host_system": 62.618712082596225, "remote_total": 34.1060655128159, "remote_user": 3.36549802294108, "remote_system": 30.74056748987482}}}`;

test('TCP: receiver bytes and rate, sender retransmits', () => {
  const r = parseIperfJson(TCP_SAMPLE);
  assert.equal(r.protocol, 'TCP');
  if (r.protocol !== 'TCP') return;
  assert.equal(r.streams, 1);
  assert.equal(r.bytes, 2368339968);
  assert.ok(Math.abs(r.bitsPerSecond - 18944673719.238323) < 1);
  assert.equal(r.retransmits, 297);
  assert.ok(Math.abs(r.seconds - 1.000108) < 1e-9);
});

test('UDP: the received rate, not the sent one, and the loss', () => {
  const r = parseIperfJson(UDP_SAMPLE);
  assert.equal(r.protocol, 'UDP');
  if (r.protocol !== 'UDP') return;
  assert.equal(r.datagramBytes, 1400);
  assert.equal(r.bytes, 93861600);
  assert.ok(Math.abs(r.bitsPerSecond - 750543046.940126) < 1);
  assert.ok(Math.abs(r.sentBitsPerSecond - 1846048649.9941518) < 1);
  assert.ok(Math.abs(r.lostPercent - 59.041120815138285) < 1e-9);
  assert.equal(r.lostPackets, 97347);
  assert.equal(r.packets, 164880);
});

test('UDP from an iperf3 without sum_received: derives received bytes from the loss', () => {
  const doc = JSON.parse(UDP_SAMPLE);
  delete doc.end.sum_received;
  delete doc.end.sum_sent;
  const r = parseIperfJson(JSON.stringify(doc));
  assert.equal(r.protocol, 'UDP');
  if (r.protocol !== 'UDP') return;
  const expected = Math.round(230832000 * (1 - 59.041120815138285 / 100));
  assert.equal(r.bytes, expected);
  assert.ok(Math.abs(r.bitsPerSecond - (expected * 8) / 1.000466) < 1);
});

test('a failed run surfaces iperf3\'s own error', () => {
  const failed = '{"start":{"connected":[],"version":"iperf 3.12"},"intervals":[],"end":{},"error":"unable to connect to server: Connection timed out"}';
  assert.throws(() => parseIperfJson(failed), /iperf3: unable to connect to server: Connection timed out/);
});

test('non-JSON and incomplete output are rejected with a readable message', () => {
  assert.throws(() => parseIperfJson(''), /not JSON: \(empty\)/);
  assert.throws(() => parseIperfJson('iperf3: error - bad'), /not JSON: iperf3: error - bad/);
  assert.throws(() => parseIperfJson('{"start":{"test_start":{"protocol":"TCP"}},"end":{}}'), /no end.sum_received/);
  assert.throws(() => parseIperfJson('{"start":{"test_start":{"protocol":"SCTP"}},"end":{}}'), /unknown protocol/);
});

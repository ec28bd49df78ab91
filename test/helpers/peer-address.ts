/** What source address a TCP peer sees: the check that tells masqueraded traffic from kept sources. */
import { run, type TestHost } from './netns.js';

/**
 * A TCP listener on `listenAddr` in namespace `listenNs` prints the first
 * peer's address; `connect` dials it from `from`. Resolves with the address
 * the listener saw (IPv4 or IPv6).
 */
export async function peerAddressSeen(listenNs: string, listenAddr: string, connect: TestHost, from: string): Promise<string> {
  const port = 9000 + Math.floor(Math.random() * 500);
  const srv = run('ip', ['netns', 'exec', listenNs, process.execPath, '-e', `require('net').createServer((s)=>{process.stdout.write(s.remoteAddress+'\\n');s.end();process.exit(0)}).listen(${port},'${listenAddr}')`], { timeoutMs: 15_000 });
  await new Promise((r) => setTimeout(r, 400));
  await connect.exec([process.execPath, '-e', `const c=require('net').connect({host:'${listenAddr}',port:${port},localAddress:'${from}'});c.on('data',()=>{});c.on('close',()=>process.exit(0));c.on('error',e=>{console.error(e.message);process.exit(1)})`], { timeoutMs: 10_000 });
  return (await srv).stdout.trim().replace(/^::ffff:/, '');
}

/**
 * Cloud API replies bounded in size, as the metadata replies are
 * (http.ts): whatever answers at an API endpoint never makes the daemon
 * buffer more than API_BODY_LIMIT. EC2: a middleware between the HTTP
 * handler and the deserializer cuts the raw body stream; Compute Engine:
 * gaxios's maxContentLength (it refuses a declared length above it).
 * Aliyun's pop-core has neither hook; its endpoint is a host setting and
 * https (endpoints.ts).
 */
import { Transform, type Readable } from 'node:stream';

/** Route tables of a few hundred routes and DescribeInstances pages are well under this. */
export const API_BODY_LIMIT = 8 * 1024 * 1024;

/** `body` with an error once more than `limit` bytes have passed. */
export function limitStream(body: Readable, limit: number, what: string): Readable {
  let seen = 0;
  const cut = new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      if (seen > limit) return done(new Error(`${what} answered with more than ${limit} bytes`));
      done(null, chunk);
    },
  });
  body.on('error', (err) => cut.destroy(err));
  return body.pipe(cut);
}

/** The smithy middleware-stack entry that bounds every raw response body of an AWS SDK client. */
export interface MiddlewareStackLike {
  add(mw: (next: (args: unknown) => Promise<{ response: unknown }>) => (args: unknown) => Promise<{ response: unknown }>, opts: { step: 'deserialize'; priority: 'low'; name: string }): void;
}

export function boundAwsResponses(stack: MiddlewareStackLike, what: string, limit = API_BODY_LIMIT): void {
  stack.add(
    (next) => async (args) => {
      const out = await next(args);
      const res = out.response as { body?: Readable } | undefined;
      if (res?.body && typeof (res.body as Readable).pipe === 'function') res.body = limitStream(res.body, limit, what);
      return out;
    },
    // Inside the deserializer (lower priority runs later): the body is cut before it is read.
    { step: 'deserialize', priority: 'low', name: 'flannelBodyLimit' },
  );
}

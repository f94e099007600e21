// Bull Board (@bull-board/api + @bull-board/express on Express), the rival dashboard, for the
// side-by-side benchmarks: pointed at the same Redis and queues as ours, default settings.
//
// Usage: node bullboard.mjs '{"redis": "redis://127.0.0.1:PORT/0", "prefix": "bull",
//                            "queues": ["emails", ...], "port": 0}'
//
// Listens on 127.0.0.1 only (port 0: a free one) and prints {"event": "ready", "url"}; the UI
// is at <url>/ui, its JSON API at <url>/ui/api/... Stops on SIGTERM.

import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { Queue } from 'bullmq';
import express from 'express';

const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

function connectionFrom(url) {
  const u = new URL(url);
  return {
    host: u.hostname || '127.0.0.1',
    port: Number(u.port || 6379),
    db: Number((u.pathname || '/0').slice(1) || 0),
    maxRetriesPerRequest: null,
  };
}

const cmd = JSON.parse(process.argv[2] || '{}');
const connection = connectionFrom(cmd.redis);
const queues = (cmd.queues || ['emails']).map(
  (name) => new Queue(name, { connection, prefix: cmd.prefix || 'bull' }),
);

const serverAdapter = new ExpressAdapter();
serverAdapter.setBasePath('/ui');
createBullBoard({ queues: queues.map((q) => new BullMQAdapter(q)), serverAdapter });

const app = express();
app.use('/ui', serverAdapter.getRouter());
const server = app.listen(Number(cmd.port || 0), '127.0.0.1', () => {
  emit({ event: 'ready', url: `http://127.0.0.1:${server.address().port}` });
});

process.on('SIGTERM', async () => {
  server.close();
  await Promise.allSettled(queues.map((q) => q.close()));
  process.exit(0);
});

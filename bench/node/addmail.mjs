// Adds n e-mail jobs to a queue as a Node producer writes them (Node BullMQ addBulk, 1,000 a
// call): name `send-notification`, camelCase data {to, name, title, message, actionUrl,
// actionLabel}, removeOnComplete. The same jobs feed mailworker.mjs and `mailqueue worker`.
// Usage: node addmail.mjs '{"redis", "prefix": "bull", "queue", "n", "start": 0, "pause": false}'
// `pause`: the queue is paused after the jobs are added (the bench starts the workers, waits
// until they are ready, then resumes it). Prints {"event": "done", "added", "seconds"}.
import { pathToFileURL } from 'node:url';
import { Queue } from 'bullmq';

export const mailData = (i) => ({
  to: `user${i}@example.com`,
  name: `User ${i}`,
  title: 'Your export is ready',
  message: 'The export you asked for (orders, last 30 days) is ready to download. '
    + 'The link stays valid for 7 days.',
  actionUrl: `https://app.example.com/exports/${i}`,
  actionLabel: 'Download the export',
});

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const cmd = JSON.parse(process.argv[2] || '{}');
  const u = new URL(cmd.redis);
  const queue = new Queue(cmd.queue, {
    connection: { host: u.hostname, port: Number(u.port), maxRetriesPerRequest: null },
    prefix: cmd.prefix || 'bull',
  });
  const started = performance.now();
  const first = cmd.start || 0;
  for (let start = 0; start < cmd.n; start += 1_000) {
    const size = Math.min(1_000, cmd.n - start);
    await queue.addBulk(Array.from({ length: size }, (_, k) => ({
      name: 'send-notification', data: mailData(first + start + k), opts: { removeOnComplete: true },
    })));
  }
  if (cmd.pause) await queue.pause();
  await queue.close();
  process.stdout.write(`${JSON.stringify({
    event: 'done', added: cmd.n, seconds: (performance.now() - started) / 1000,
  })}\n`);
}

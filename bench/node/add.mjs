// Adds n no-op jobs to a queue (Node BullMQ addBulk, 10,000 a call).
// Usage: node add.mjs '{"redis", "prefix": "bull", "queue", "n", "removeOnComplete": false}'
// Prints {"event": "done", "added", "seconds"}.
import { Queue } from 'bullmq';

const cmd = JSON.parse(process.argv[2] || '{}');
const u = new URL(cmd.redis);
const queue = new Queue(cmd.queue, {
  connection: { host: u.hostname, port: Number(u.port), maxRetriesPerRequest: null },
  prefix: cmd.prefix || 'bull',
});
const started = performance.now();
const opts = cmd.removeOnComplete ? { removeOnComplete: true } : {};
for (let start = 0; start < cmd.n; start += 10_000) {
  const size = Math.min(10_000, cmd.n - start);
  await queue.addBulk(Array.from({ length: size }, (_, i) => ({
    name: 'noop', data: { i: start + i }, opts,
  })));
}
await queue.close();
process.stdout.write(`${JSON.stringify({
  event: 'done', added: cmd.n, seconds: (performance.now() - started) / 1000,
})}\n`);

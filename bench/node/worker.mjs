// A Node BullMQ Worker with a no-op processor.
// Usage: node worker.mjs '{"redis", "prefix": "bull", "queue", "concurrency": 1, "jobs": N,
//                          "seconds": S, "quiet": false}'
// Prints {"event": "ready"}, then {"event": "completed", "id", "finishedOn"} per job (unless
// quiet), and ends after N jobs (0: no limit) or S seconds or SIGTERM with
// {"event": "done", "jobs", "seconds", "rate"}: the time from the first job taken to the last
// job finished.
import { Worker } from 'bullmq';

const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
const cmd = JSON.parse(process.argv[2] || '{}');
const u = new URL(cmd.redis);
let done = 0;
let first = null;
let last = null;
const worker = new Worker(cmd.queue, async () => {
  if (first === null) first = performance.now();
  return null;
}, {
  connection: { host: u.hostname, port: Number(u.port), maxRetriesPerRequest: null },
  prefix: cmd.prefix || 'bull',
  concurrency: cmd.concurrency || 1,
  autorun: false,
});
const finish = async () => {
  const seconds = ((last ?? performance.now()) - (first ?? performance.now())) / 1000;
  emit({ event: 'done', jobs: done, seconds, rate: seconds > 0 ? done / seconds : 0 });
  await worker.close(true);
  process.exit(0);
};
worker.on('completed', (job) => {
  done += 1;
  last = performance.now();
  if (!cmd.quiet) emit({ event: 'completed', id: job.id, finishedOn: job.finishedOn });
  if (cmd.jobs && done >= cmd.jobs) finish();
});
process.on('SIGTERM', finish);
setTimeout(finish, (cmd.seconds || 600) * 1000);
await worker.waitUntilReady();
emit({ event: 'ready' });
worker.run();

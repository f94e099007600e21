// Fills one Redis for the dashboard benchmarks, with Node BullMQ only (so both dashboards,
// ours and Bull Board, read identical data written by the reference implementation).
//
// Usage: node fill.mjs '{"redis": "redis://127.0.0.1:PORT/0", "prefix": "bull", "scale": 1}'
//
// At scale 1: `emails` holds 1,000,000 waiting + 50,000 completed + 50,000 failed (each with a
// stack trace) + 5,000 delayed jobs; 20 small queues (`small-00`..`small-19`, 25 waiting +
// 25 completed each); 1,000 flows (a parent in `flow-parents`, 3 children in
// `flow-children`); 50 job schedulers on `reports`. Other scales multiply every job count
// (at least 1 each); the queue, flow and scheduler counts stay.
//
// Prints JSON lines: {"event": "step", "step", "seconds", "jobs"} per step, then
// {"event": "done", "seconds", "emails": {...counts}}.

import { FlowProducer, Queue, Worker } from 'bullmq';

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
const scale = Number(cmd.scale ?? 1);
const n = (count) => Math.max(1, Math.round(count * scale));
const opts = { connection: connectionFrom(cmd.redis), prefix: cmd.prefix || 'bull' };
const CHUNK = 10_000;
const started = performance.now();

function email(i) {
  return {
    name: 'send-notification',
    data: {
      to: `reader${i}@example.com`,
      title: `Your weekly digest #${i}`,
      message: 'Hello! Here is what happened this week on the project.',
      vars: { first_name: 'Zoë', plan: i % 3 ? 'free' : 'pro', locale: 'en' },
    },
  };
}

async function step(name, count, fn) {
  const t0 = performance.now();
  await fn();
  emit({ event: 'step', step: name, jobs: count, seconds: (performance.now() - t0) / 1000 });
}

async function addChunked(queue, count, make, jobOpts = {}) {
  for (let start = 0; start < count; start += CHUNK) {
    const size = Math.min(CHUNK, count - start);
    const jobs = [];
    for (let i = 0; i < size; i += 1) {
      const job = make(start + i);
      job.opts = { ...jobOpts, ...(job.opts || {}) };
      jobs.push(job);
    }
    await queue.addBulk(jobs);
  }
}

// Jobs to finish: the first `done` succeed, the rest fail (an Error, so a stack trace).
async function finish(queueName, done, failed) {
  const queue = new Queue(queueName, opts);
  const total = done + failed;
  await addChunked(queue, total, (i) => ({
    ...email(i), data: { ...email(i).data, fail: i >= done },
  }));
  let finished = 0;
  let resolveAll;
  const all = new Promise((resolve) => { resolveAll = resolve; });
  const worker = new Worker(queueName, async (job) => {
    if (job.data.fail) {
      throw new Error(`SMTP 550 5.1.1 <${job.data.to}>: mailbox unavailable`);
    }
    return { accepted: [job.data.to], messageId: `<${job.id}@bench.localhost>` };
  }, { ...opts, concurrency: 200, autorun: false });
  const count = () => { finished += 1; if (finished >= total) resolveAll(); };
  worker.on('completed', count);
  worker.on('failed', count);
  worker.run();
  const deadline = setTimeout(() => resolveAll(), 20 * 60 * 1000); // bounded
  await all;
  clearTimeout(deadline);
  await worker.close();
  await queue.close();
}

try {
  await step('emails: completed + failed (a Node worker)', n(50_000) + n(50_000),
    () => finish('emails', n(50_000), n(50_000)));
  const emails = new Queue('emails', opts);
  await step('emails: delayed', n(5_000), () => addChunked(
    emails, n(5_000), (i) => email(i), { delay: 24 * 3600 * 1000 },
  ));
  await step('emails: waiting (addBulk, 10,000 a call)', n(1_000_000),
    () => addChunked(emails, n(1_000_000), (i) => email(i)));
  await step('20 small queues', 20 * 50, async () => {
    for (let q = 0; q < 20; q += 1) {
      const name = `small-${String(q).padStart(2, '0')}`;
      await finish(name, 25, 0);
      const queue = new Queue(name, opts);
      await addChunked(queue, 25, (i) => email(i));
      await queue.close();
    }
  });
  await step('1,000 flows (1 parent + 3 children)', 4000, async () => {
    const producer = new FlowProducer(opts);
    for (let start = 0; start < 1000; start += 100) {
      const flows = [];
      for (let f = start; f < start + 100; f += 1) {
        flows.push({
          name: 'newsletter', queueName: 'flow-parents', data: { campaign: `Issue ${f}` },
          children: [0, 1, 2].map((c) => ({
            name: 'send-notification', queueName: 'flow-children', data: email(f * 3 + c).data,
          })),
        });
      }
      await producer.addBulk(flows);
    }
    await producer.close();
  });
  await step('50 job schedulers', 50, async () => {
    const queue = new Queue('reports', opts);
    for (let s = 0; s < 50; s += 1) {
      await queue.upsertJobScheduler(`report-${s}`, { every: 3_600_000 + s * 60_000 },
        { name: 'weekly-report', data: { report: s } });
    }
    await queue.close();
  });
  await step('live-bench (one completed job)', 1, () => finish('live-bench', 1, 0));
  const counts = await emails.getJobCounts();
  await emails.close();
  emit({ event: 'done', seconds: (performance.now() - started) / 1000, emails: counts });
  process.exit(0);
} catch (err) {
  emit({ event: 'error', message: String(err && err.stack ? err.stack : err) });
  process.exit(1);
}

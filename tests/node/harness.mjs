// The Node BullMQ side of the interop tests (tests/mailqueue/test_node_interop.py).
//
// Usage: node harness.mjs '<json command>'      (or the JSON command on stdin)
//
// Every command has {"op", "redis": "redis://host:port/db", "prefix": "bull"} and prints JSON
// lines on stdout, one per event, ending with {"event": "done", ...}. Errors print
// {"event": "error", "message"} on stdout and exit 1.
//
//   {"op": "add", "queue", "jobs": [{"name", "data", "opts"}]}
//       -> {"event": "added", "id", "name"} per job
//   {"op": "flow", "flow": {name, queueName, data, opts, children: [...]}}
//       -> {"event": "flow", "tree": {"queue", "id", "name", "children": [...]}}
//   {"op": "schedule", "queue", "id", "repeat": {pattern | every, ...}, "template": {name, data, opts}}
//       -> {"event": "scheduled", "id", "next", "schedulers": [...]}
//   {"op": "work", "queue", "concurrency": 1, "jobs": N, "seconds": S, "name": "worker name",
//    "options": {...}, "hang": false}
//       -> {"event": "ready"} once the worker is running, then {"event": "completed" | "failed",
//          "id", "name", ...} per job; stops after N jobs finished, S seconds, or SIGTERM.
//       `options`: more Worker options, passed through as they are (limiter, lockDuration,
//       stalledInterval, maxStalledCount, removeOnComplete, removeOnFail, ...); `concurrency`
//       and `name` are the fields above. `hang`: true: the processor never settles, for any
//       job (to leave a job active when the process is killed: the stalled-job tests).
//
// The worker's processor, steered by the job's data, in this order (tests/mailqueue/
// test_runtime_canary.py has a Python processor that does the same for the native worker):
//   data.progress: [..]    each value passed to job.updateProgress, in order
//   data.logs: [..]        each line passed to job.log
//   data.sleepMs: n        waits n ms
//   data.fail: "msg"       throws Error(msg)
//   data.unrecoverable: "msg"  throws bullmq's UnrecoverableError(msg) (no retries)
//   data.failUntil: n      throws Error("attempt <a> of <n>") while the attempt number
//                          a = job.attemptsMade + 1 is below n (succeeds on attempt n)
//   data.childrenCount: true  returns Object.keys(await job.getChildrenValues()).length
// and otherwise returns {"by": "node", "name": job.name, "id": job.id, "echo": job.data}.

import { FlowProducer, Queue, UnrecoverableError, Worker } from 'bullmq';

function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function connectionFrom(url) {
  const u = new URL(url);
  const options = {
    host: u.hostname || '127.0.0.1',
    port: Number(u.port || 6379),
    db: Number((u.pathname || '/0').slice(1) || 0),
    maxRetriesPerRequest: null,
  };
  if (u.username) options.username = decodeURIComponent(u.username);
  if (u.password) options.password = decodeURIComponent(u.password);
  if (u.protocol === 'rediss:') options.tls = {};
  return options;
}

async function readCommand() {
  if (process.argv[2]) return JSON.parse(process.argv[2]);
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

function treeOf(node) {
  return {
    queue: node.job.queueName,
    id: node.job.id,
    name: node.job.name,
    children: (node.children || []).map(treeOf),
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function add(cmd, opts) {
  const queue = new Queue(cmd.queue, opts);
  try {
    const jobs = await queue.addBulk(
      cmd.jobs.map((j) => ({ name: j.name, data: j.data ?? {}, opts: j.opts ?? {} })),
    );
    for (const job of jobs) emit({ event: 'added', id: job.id, name: job.name });
    emit({ event: 'done', added: jobs.length });
  } finally {
    await queue.close();
  }
}

async function flow(cmd, opts) {
  const producer = new FlowProducer(opts);
  try {
    const node = await producer.add(cmd.flow);
    emit({ event: 'flow', tree: treeOf(node) });
    emit({ event: 'done' });
  } finally {
    await producer.close();
  }
}

async function schedule(cmd, opts) {
  const queue = new Queue(cmd.queue, opts);
  try {
    const t = cmd.template ?? {};
    const job = await queue.upsertJobScheduler(cmd.id, cmd.repeat, {
      name: t.name, data: t.data ?? {}, opts: t.opts ?? {},
    });
    const schedulers = await queue.getJobSchedulers(0, -1, true);
    emit({ event: 'scheduled', id: cmd.id, job: job ? job.id : null, schedulers });
    emit({ event: 'done' });
  } finally {
    await queue.close();
  }
}

function processorFor(cmd) {
  return async (job) => {
    const data = job.data ?? {};
    for (const value of data.progress ?? []) await job.updateProgress(value);
    for (const line of data.logs ?? []) await job.log(line);
    if (data.sleepMs) await sleep(data.sleepMs);
    if (cmd.hang) await new Promise(() => {});
    if (data.fail) throw new Error(data.fail);
    if (data.unrecoverable) throw new UnrecoverableError(data.unrecoverable);
    const attempt = job.attemptsMade + 1;
    if (data.failUntil && attempt < data.failUntil) {
      throw new Error(`attempt ${attempt} of ${data.failUntil}`);
    }
    if (data.childrenCount) return Object.keys(await job.getChildrenValues()).length;
    return { by: 'node', name: job.name, id: job.id, echo: data };
  };
}

async function work(cmd, opts) {
  const wanted = cmd.jobs ?? Infinity;
  let completed = 0;
  let failed = 0;
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  const worker = new Worker(cmd.queue, processorFor(cmd), {
    ...opts,
    ...(cmd.options ?? {}),
    concurrency: cmd.concurrency ?? 1,
    ...(cmd.name ? { name: cmd.name } : {}),
  });
  const check = () => { if (completed + failed >= wanted) finish('jobs'); };
  worker.on('completed', (job, returnvalue) => {
    completed += 1;
    emit({ event: 'completed', id: job.id, name: job.name, returnvalue });
    check();
  });
  worker.on('failed', (job, err) => {
    failed += 1;
    emit({ event: 'failed', id: job?.id, name: job?.name, reason: err?.message });
    check();
  });
  worker.on('error', (err) => emit({ event: 'worker-error', message: String(err?.message ?? err) }));
  process.once('SIGTERM', () => finish('signal'));
  process.once('SIGINT', () => finish('signal'));
  const timer = setTimeout(() => finish('timeout'), (cmd.seconds ?? 30) * 1000);
  await worker.waitUntilReady();
  // `ready` means both the worker's connections exist and have their client names.
  emit({ event: 'ready' });
  const reason = await finished;
  clearTimeout(timer);
  await worker.close();
  emit({ event: 'done', reason, completed, failed });
}

const OPS = { add, flow, schedule, work };

async function main() {
  const cmd = await readCommand();
  const run = OPS[cmd.op];
  if (!run) throw new Error(`unknown op ${JSON.stringify(cmd.op)}; one of ${Object.keys(OPS)}`);
  const opts = { connection: connectionFrom(cmd.redis), prefix: cmd.prefix ?? 'bull' };
  await run(cmd, opts);
}

main().then(
  () => process.exit(0),
  (err) => {
    emit({ event: 'error', message: String(err?.stack ?? err) });
    process.exit(1);
  },
);

// The Node side of the mail bench: a BullMQ Worker whose processor renders the notification
// e-mail (text + HTML, the same output as mailqueue's built-in `notification` template for
// the data addmail.mjs writes, here with template literals) and sends it with nodemailer
// through a pool of SMTP connections, as a Node service sends mail.
// Usage: node mailworker.mjs '{"redis", "prefix": "bull", "queue", "smtp": "smtp://host:port",
//                              "concurrency": 50, "pool": 5}'
//        node mailworker.mjs --render I   (prints {data, subject, html, text} for job I: a check)
// Prints {"event": "ready"}; on SIGTERM {"event": "done", "completed", "failed", "failures"}
// (the first failure reasons) and exits.
import { Worker } from 'bullmq';
import nodemailer from 'nodemailer';
import { mailData } from './addmail.mjs';

const FROM = 'mailqueue <noreply@localhost>';
const APP = 'mailqueue';
const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&#34;', "'": '&#39;' };
const esc = (value) => String(value).replace(/[&<>"']/g, (c) => ESC[c]);

export function render(d) {
  const title = esc(d.title);
  const hello = d.name ? `<p style="margin:0 0 16px;">Hello ${esc(d.name)},</p>` : '';
  const button = d.actionUrl ? `
<table role="presentation" cellspacing="0" cellpadding="0" border="0" style="margin:24px 0;">
<tr><td style="border-radius:4px;background-color:#2563eb;">
<a href="${esc(d.actionUrl)}" style="display:inline-block;padding:12px 24px;font-family:Arial,Helvetica,sans-serif;font-size:16px;font-weight:bold;color:#ffffff;text-decoration:none;border-radius:4px;">${esc(d.actionLabel || 'Open')}</a>
</td></tr>
</table>` : '\n';
  const html = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light">
<title>${title}</title>
</head>
<body style="margin:0;padding:0;background-color:#f4f5f7;">
<table role="presentation" width="100%" cellspacing="0" cellpadding="0" border="0" style="background-color:#f4f5f7;">
<tr><td align="center" style="padding:24px 12px;">
<table role="presentation" width="600" cellspacing="0" cellpadding="0" border="0" style="max-width:600px;width:100%;background-color:#ffffff;border-radius:6px;border:1px solid #e3e5e8;">
<tr><td style="padding:20px 32px;border-bottom:1px solid #e3e5e8;font-family:Arial,Helvetica,sans-serif;font-size:18px;font-weight:bold;color:#1f2933;">
${APP}</td></tr>
<tr><td style="padding:28px 32px;font-family:Arial,Helvetica,sans-serif;font-size:16px;line-height:24px;color:#1f2933;">
<h1 style="margin:0 0 16px;font-size:22px;line-height:30px;">${title}</h1>
${hello}<p style="margin:0 0 16px;white-space:pre-line;">${esc(d.message)}</p>${button}</td></tr>
<tr><td style="padding:16px 32px;border-top:1px solid #e3e5e8;font-family:Arial,Helvetica,sans-serif;font-size:12px;line-height:18px;color:#7b8794;">
Sent by ${APP}.</td></tr>
</table>
</td></tr>
</table>
</body>
</html>`;
  const text = `${APP}\n${'='.repeat(APP.length)}\n\n${d.title}\n\n`
    + (d.name ? `Hello ${d.name},\n\n` : '')
    + `${d.message}\n`
    + (d.actionUrl ? `\n${d.actionLabel || 'Open'}: ${d.actionUrl}\n` : '')
    + `\n--\nSent by ${APP}.\n`;
  return { subject: d.title, html, text };
}

const emit = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

if (process.argv[2] === '--render') {
  const data = mailData(Number(process.argv[3]));
  emit({ data, ...render(data) });
} else {
  const cmd = JSON.parse(process.argv[2] || '{}');
  const u = new URL(cmd.redis);
  const smtp = new URL(cmd.smtp);
  const transporter = nodemailer.createTransport({
    pool: true,
    maxConnections: cmd.pool || 5,
    maxMessages: Infinity, // like mailqueue's pool: a connection is not recycled
    host: smtp.hostname,
    port: Number(smtp.port),
    secure: false,
    ignoreTLS: true, // the bench sink speaks plain SMTP
  });
  let completed = 0;
  let failed = 0;
  const failures = [];
  const worker = new Worker(cmd.queue, async (job) => {
    const { subject, html, text } = render(job.data);
    const info = await transporter.sendMail({ from: FROM, to: job.data.to, subject, text, html });
    if (info.rejected.length) throw new Error(`refused: ${info.rejected.join(', ')}`);
    return { messageId: info.messageId, response: info.response };
  }, {
    connection: { host: u.hostname, port: Number(u.port), maxRetriesPerRequest: null },
    prefix: cmd.prefix || 'bull',
    concurrency: cmd.concurrency || 50,
    autorun: false,
  });
  worker.on('completed', () => { completed += 1; });
  worker.on('failed', (job, err) => {
    failed += 1;
    if (failures.length < 5) failures.push(`${job?.id}: ${err?.message}`);
  });
  worker.on('error', (err) => {
    if (failures.length < 5) failures.push(`worker error: ${err?.message}`);
  });
  process.on('SIGTERM', async () => {
    await worker.close();
    transporter.close();
    emit({ event: 'done', completed, failed, failures });
    process.exit(0);
  });
  await worker.waitUntilReady();
  emit({ event: 'ready' });
  worker.run();
}

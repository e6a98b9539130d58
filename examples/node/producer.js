// Publishes one wxcourier job with a W3C traceparent, then waits for its outcome.
//
//   npm install            (amqplib, from package.json)
//   node producer.js [--amqp URL] [--app APP] [--to OPENID] [--template ID]
//
// The outcome is read from a queue of its own bound to wxcourier.results as `*.APP` (every
// status of the app); it exits 0 when the job's outcome is `sent`, 1 otherwise.
"use strict";
const amqp = require("amqplib");
const crypto = require("node:crypto");

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const url = arg("amqp", process.env.AMQP_URL || "amqp://guest:guest@127.0.0.1:5672/%2f");
const app = arg("app", "default");
const to = arg("to", "oia2TjuEGTNoeX76QEjQNrcURxG8");
const template = arg("template", "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY");
const timeoutMs = 1000 * Number(arg("timeout", "30"));

async function main() {
  const conn = await amqp.connect(url);
  const ch = await conn.createConfirmChannel(); // the broker confirms each publish
  // Bind before publishing, so the outcome cannot come before anyone listens.
  const { queue } = await ch.assertQueue("", { exclusive: true });
  await ch.bindQueue(queue, "wxcourier.results", `*.${app}`);

  const id = `node-${crypto.randomUUID()}`;
  const traceparent = `00-${crypto.randomBytes(16).toString("hex")}-${crypto.randomBytes(8).toString("hex")}-01`;
  const job = {
    id, touser: to, template_id: template,
    data: { keyword1: { value: "Order 1842 paid" } }, meta: { order: 1842 },
  };
  ch.on("return", () => { console.error(`${id} came back: no queue for app ${app}`); process.exit(1); });
  ch.publish("wxcourier.jobs", app, Buffer.from(JSON.stringify(job)), {
    contentType: "application/json", persistent: true, messageId: id,
    headers: { traceparent }, mandatory: true,
  });
  await ch.waitForConfirms();
  console.log(`published ${id} with traceparent ${traceparent}`);

  const timer = setTimeout(() => { console.error(`no outcome for ${id}`); process.exit(1); }, timeoutMs);
  await ch.consume(queue, async (msg) => {
    ch.ack(msg);
    const outcome = JSON.parse(msg.content.toString());
    if (outcome.id !== id) return;
    clearTimeout(timer);
    const echoed = (msg.properties.headers || {}).traceparent?.toString();
    console.log(`${msg.fields.routingKey}: ${JSON.stringify(outcome)}`);
    console.log(`traceparent on the outcome: ${echoed}`);
    await conn.close();
    process.exit(outcome.status === "sent" && echoed === traceparent ? 0 : 1);
  });
}

main().catch((e) => { console.error(e.message); process.exit(1); });

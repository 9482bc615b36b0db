// Host side of the QEMU firmware test (ci/qemu-test.sh): talks UDP to the board through QEMU's
// user-mode port forward, checks the echo, then sends `quit` and expects `bye`.
//   node tests/qemu/udp_echo.js PORT [HOST]      (HOST defaults to 127.0.0.1)
// Exits 0 on success; prints what went wrong and exits 1 otherwise. Bounded: each request is
// retried a few times (the first datagram can arrive while the stack still resolves ARP).
'use strict';
const dgram = require('dgram');

const port = Number(process.argv[2]);
const host = process.argv[3] || '127.0.0.1';
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node udp_echo.js PORT [HOST]');
  process.exit(2);
}

const sock = dgram.createSocket('udp4');

function ask(payload, tries = 5, timeoutMs = 1000) {
  return new Promise((resolve, reject) => {
    let left = tries;
    let timer = null;
    const started = process.hrtime.bigint();
    const onMessage = (msg) => {
      clearTimeout(timer);
      sock.off('message', onMessage);
      resolve({ msg, ms: Number(process.hrtime.bigint() - started) / 1e6 });
    };
    const send = () => {
      if (left === 0) {
        sock.off('message', onMessage);
        reject(new Error(`no answer to ${JSON.stringify(payload.toString().slice(0, 20))} after ${tries} tries`));
        return;
      }
      left -= 1;
      sock.send(payload, port, host);
      timer = setTimeout(send, timeoutMs);
    };
    sock.on('message', onMessage);
    send();
  });
}

(async () => {
  const big = Buffer.alloc(500, 'grenache ');
  for (const payload of [Buffer.from('hello board'), big]) {
    const { msg, ms } = await ask(payload);
    if (!msg.equals(payload)) {
      throw new Error(`echo mismatch: sent ${payload.length} bytes, got ${msg.length}: ${JSON.stringify(msg.toString().slice(0, 40))}`);
    }
    console.log(`echo ok: ${payload.length} bytes in ${ms.toFixed(1)} ms`);
  }
  const { msg } = await ask(Buffer.from('quit'), 1, 3000);
  if (msg.toString() !== 'bye') {
    throw new Error(`quit answered ${JSON.stringify(msg.toString())}, expected "bye"`);
  }
  console.log('quit ok: the board said bye');
  sock.close();
})().catch((err) => {
  console.error(`udp_echo: ${err.message}`);
  sock.close();
  process.exit(1);
});

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

// Sends `payload` until a datagram that `accept` likes arrives (`tries` sends, `timeoutMs`
// apart). Other datagrams (a late answer to an earlier retry) are ignored.
function ask(payload, accept, tries = 5, timeoutMs = 1000) {
  return new Promise((resolve, reject) => {
    let left = tries;
    let timer = null;
    let ignored = null;
    const started = process.hrtime.bigint();
    const onMessage = (msg) => {
      if (!accept(msg)) {
        ignored = msg;
        return;
      }
      clearTimeout(timer);
      sock.off('message', onMessage);
      resolve({ msg, ms: Number(process.hrtime.bigint() - started) / 1e6 });
    };
    const send = () => {
      if (left === 0) {
        sock.off('message', onMessage);
        const seen = ignored ? `; last other datagram: ${ignored.length} bytes ${JSON.stringify(ignored.toString().slice(0, 40))}` : '';
        reject(new Error(`no right answer to ${JSON.stringify(payload.toString().slice(0, 20))} after ${tries} tries${seen}`));
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
    const { ms } = await ask(payload, (msg) => msg.equals(payload));
    console.log(`echo ok: ${payload.length} bytes in ${ms.toFixed(1)} ms`);
  }
  // One send only: the board exits right after answering, so a retry would find no one.
  await ask(Buffer.from('quit'), (msg) => msg.toString() === 'bye', 1, 3000);
  console.log('quit ok: the board said bye');
  sock.close();
})().catch((err) => {
  console.error(`udp_echo: ${err.message}`);
  sock.close();
  process.exit(1);
});

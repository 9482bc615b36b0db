'use strict'
// Client of the RPC benchmark (ci/bench-rpc.sh): COUNT echo requests of a 100-byte JSON
// payload, 64 in flight, after a warm-up of 64. Prints one JSON line.
// Env: GRAPE (grape API URL), TRANSPORT (ws | http), NAME (service name), COUNT.
const Link = require('grenache-nodejs-link')

const transport = process.env.TRANSPORT || 'ws'
const { PeerRPCClient } = require(transport === 'http' ? 'grenache-nodejs-http' : 'grenache-nodejs-ws')
const name = process.env.NAME || 'bench_echo'
const count = parseInt(process.env.COUNT || '10000', 10)
const inFlight = 64
const payload = 'x'.repeat(98) // JSON.stringify gives exactly 100 bytes

const link = new Link({ grape: process.env.GRAPE })
link.start()
const peer = new PeerRPCClient(link, {})
peer.init()

function run (n, done) {
  let started = 0
  let finished = 0
  const one = () => {
    if (started >= n) return
    started++
    peer.request(name, payload, { timeout: 30000 }, (err, data) => {
      if (err || data !== payload) {
        console.error('bench_client.js:', err ? err.message : `bad echo ${data}`)
        process.exit(1)
      }
      if (++finished === n) return done()
      one()
    })
  }
  for (let i = 0; i < inFlight; i++) one()
}

run(inFlight, () => {
  const t0 = process.hrtime.bigint()
  run(count, () => {
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9
    console.log(JSON.stringify({
      setup: 'node client -> worker',
      transport,
      requests: count,
      in_flight: inFlight,
      seconds: Math.round(seconds * 1000) / 1000,
      req_per_s: Math.round(count / seconds)
    }))
    process.exit(0)
  })
})

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

const latencies = [] // ms, of the measured run

function run (n, done, record) {
  let started = 0
  let finished = 0
  const one = () => {
    if (started >= n) return
    started++
    const sent = process.hrtime.bigint()
    peer.request(name, payload, { timeout: 30000 }, (err, data) => {
      if (record) latencies.push(Number(process.hrtime.bigint() - sent) / 1e6)
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
  const cpu0 = process.cpuUsage()
  const io0 = syscalls()
  const t0 = process.hrtime.bigint()
  run(count, () => {
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9
    const cpu = process.cpuUsage(cpu0)
    const io = syscalls()
    console.log(JSON.stringify({
      setup: 'node client -> worker',
      transport,
      requests: count,
      in_flight: inFlight,
      seconds: Math.round(seconds * 1000) / 1000,
      req_per_s: Math.round(count / seconds),
      p50_ms: percentile(50),
      p99_ms: percentile(99),
      cpu_us_per_req: Math.round((cpu.user + cpu.system) / count * 10) / 10,
      user_us_per_req: Math.round(cpu.user / count * 10) / 10,
      reads_per_req: io && io0 ? Math.round((io.syscr - io0.syscr) / count * 1000) / 1000 : undefined,
      writes_per_req: io && io0 ? Math.round((io.syscw - io0.syscw) / count * 1000) / 1000 : undefined
    }))
    process.exit(0)
  }, true)
})

// The p-th percentile of the latencies, in ms rounded to µs (the rule of bench_rpc.rs).
function percentile (p) {
  latencies.sort((a, b) => a - b)
  const last = latencies.length - 1
  if (last < 0) return 0
  const at = Math.min(last, Math.ceil(last * p / 100))
  return Math.round(latencies[at] * 1000) / 1000
}

// Read and write syscalls of this process so far (Linux only, else undefined).
function syscalls () {
  try {
    const text = require('fs').readFileSync('/proc/self/io', 'utf8')
    const field = (name) => parseInt(text.match(new RegExp(name + ': (\\d+)'))[1], 10)
    return { syscr: field('syscr'), syscw: field('syscw') }
  } catch (e) {
    return undefined
  }
}

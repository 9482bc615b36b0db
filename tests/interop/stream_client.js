'use strict'
// A Grenache HTTP stream client (`peer.stream`) for the Rust interop tests: uploads a body,
// reads the raw response and prints one JSON line
// {"err": <message or null>, "len": <response bytes>, "pattern": <response is the test
//  pattern>, "text": <response as UTF-8 when at most 64 KiB, else null>}, then exits.
// Env: GRAPE, NAME, HEADERS (JSON object, default {}), TIMEOUT (ms, default 10000),
//      BODY (text to upload) or SIZE (upload SIZE bytes of the test pattern, in 64 KiB
//      writes with backpressure).
const { Readable } = require('stream')
const Link = require('grenache-nodejs-link')
const { PeerRPCClient } = require('grenache-nodejs-http')
const { patternByte, readPattern } = require('./stream_pattern')

const name = process.env.NAME || 'rpc_stream'
const headers = JSON.parse(process.env.HEADERS || '{}')
const timeout = parseInt(process.env.TIMEOUT || '10000', 10)

const link = new Link({ grape: process.env.GRAPE })
link.start()
const peer = new PeerRPCClient(link, {})
peer.init()

let done = false
const finish = (out) => {
  if (done) return
  done = true
  console.log(JSON.stringify(out))
  process.exit(0)
}
setTimeout(() => finish({ err: 'SCRIPT_TIMEOUT', len: 0, pattern: false, text: null }), timeout + 5000)

const req = peer.stream(name, { timeout, headers })
const received = readPattern(req, ({ len, pattern, text }) => finish({ err: null, len, pattern, text }))
req.on('error', (e) => finish({ err: e.message, len: received(), pattern: false, text: null }))

if (process.env.SIZE) {
  const size = parseInt(process.env.SIZE, 10)
  async function * chunks () {
    for (let off = 0; off < size; off += 65536) {
      const n = Math.min(65536, size - off)
      const b = Buffer.alloc(n)
      for (let i = 0; i < n; i++) b[i] = patternByte(off + i)
      yield b
    }
  }
  Readable.from(chunks()).pipe(req)
} else {
  req.end(process.env.BODY || '')
}

'use strict'
// A grenache-nodejs-http worker for the Rust stream interop tests.
// Env: GRAPE, NAME, PORT, MODE:
//   stream   - `disableBuffered: true` and a 'stream' listener (Node's streaming server):
//              action (_a) "echo" pipes the request body back raw; any other streamed
//              request is read whole and answered with handler.reply(rid, null, summary),
//              summary = {len, pattern, text (UTF-8 if <= 64 KiB), action, args, infoHeaders,
//              contentType, isStream}; a buffered (non-chunked) request is parsed as
//              [rid, key, payload] and answered {buffered: payload}.
//   buffered - the default server (no disableBuffered): 'request' events; payload "hello"
//              is answered "world" (as grenache-nodejs-http's own test), anything else
//              {payload, key, isStream}.
const Link = require('grenache-nodejs-link')
const { PeerRPCServer } = require('grenache-nodejs-http')

const patternByte = (i) => (i ^ (i >>> 8) ^ (i >>> 16)) & 0xff

const name = process.env.NAME || 'rpc_stream'
const port = parseInt(process.env.PORT, 10)
const mode = process.env.MODE || 'stream'

const link = new Link({ grape: process.env.GRAPE })
link.start()

const peer = new PeerRPCServer(link, { timeout: 300000, disableBuffered: mode === 'stream' })
peer.init()
const service = peer.transport('server')
service.listen(port)

service.on('stream', (req, rep, meta, handler) => {
  if (mode !== 'stream') return
  if (meta.isStream && meta.action === 'echo') {
    req.pipe(rep)
    return
  }
  let len = 0
  let pattern = true
  const kept = []
  req.on('data', (d) => {
    for (let i = 0; i < d.length; i++) {
      if (d[i] !== patternByte(len + i)) { pattern = false; break }
    }
    if (len + d.length <= 65536) kept.push(d)
    len += d.length
  })
  req.on('end', () => {
    const body = Buffer.concat(kept)
    if (!meta.isStream) {
      const [rid, , payload] = JSON.parse(body.toString())
      handler.reply(rid, null, { buffered: payload })
      return
    }
    handler.reply(meta.infoHeaders[0], null, {
      len,
      pattern: pattern && len > 0,
      text: len <= 65536 ? body.toString('utf8') : null,
      action: meta.action,
      args: meta.args,
      infoHeaders: meta.infoHeaders,
      contentType: req.headers['content-type'] || null,
      isStream: meta.isStream
    })
  })
})

service.on('request', (rid, key, payload, handler, cert, meta) => {
  if (payload === 'hello') return handler.reply(null, 'world')
  handler.reply(null, { payload, key, isStream: meta.isStream })
})

const announce = () => link.announce(name, port, {}, () => {})
announce()
setInterval(announce, 1000)

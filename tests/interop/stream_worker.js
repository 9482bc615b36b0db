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
const { readPattern } = require('./stream_pattern')

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
  readPattern(req, ({ len, pattern, body, text }) => {
    if (!meta.isStream) {
      const [rid, , payload] = JSON.parse(body.toString())
      handler.reply(rid, null, { buffered: payload })
      return
    }
    handler.reply(meta.infoHeaders[0], null, {
      len,
      pattern,
      text,
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

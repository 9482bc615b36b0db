'use strict'
// A Grenache worker for the Rust interop tests (grenache-nodejs-ws or -http).
// Env: GRAPE (grape API URL), TRANSPORT (ws | http, default ws), NAME (service name),
//      PORT (port to listen on), TAG (put in echo answers, to tell workers apart).
// Payloads: {"op":"echo","v":x} -> {"echo":x,"from":TAG}; {"op":"boom"} -> Error('boom');
//           {"op":"boom_data"} -> reply(Error('ERR_X'), 'partial'); {"op":"silent"} -> never
//           answers; {"number":n} -> fibonacci(n) as in the tutorial.
const Link = require('grenache-nodejs-link')

const transport = process.env.TRANSPORT || 'ws'
const { PeerRPCServer } = require(transport === 'http' ? 'grenache-nodejs-http' : 'grenache-nodejs-ws')
const name = process.env.NAME || 'rpc_test'
const port = parseInt(process.env.PORT, 10)
const tag = process.env.TAG || 'node'

function fibonacci (n) {
  return n <= 1 ? 1 : fibonacci(n - 1) + fibonacci(n - 2)
}

const link = new Link({ grape: process.env.GRAPE })
link.start()

const peer = new PeerRPCServer(link, transport === 'http' ? { timeout: 300000 } : {})
peer.init()

const service = peer.transport('server')
service.listen(port)

service.on('request', (rid, key, payload, handler) => {
  const op = payload && payload.op
  if (op === 'echo') return handler.reply(null, { echo: payload.v, from: tag })
  if (op === 'boom') return handler.reply(new Error('boom'))
  if (op === 'boom_data') return handler.reply(new Error('ERR_X'), 'partial')
  if (op === 'silent') return
  handler.reply(null, fibonacci(payload.number))
})

const announce = () => link.announce(name, port, {}, () => {})
announce()
setInterval(announce, 1000)

'use strict'
// A Grenache worker with TLS (grenache-nodejs-ws / -http `secure`) for the Rust interop tests.
// Env: GRAPE, TRANSPORT (ws | http), NAME, PORT, CERTS (a folder with ca.pem, server.pem,
//      server.key). Client certificates are required and checked against ca.pem. Replies
//      {"fingerprint": <the client certificate's fingerprint as Node prints it>, "payload": x}.
const fs = require('fs')
const path = require('path')
const Link = require('grenache-nodejs-link')

const transport = process.env.TRANSPORT || 'ws'
const { PeerRPCServer } = require(transport === 'http' ? 'grenache-nodejs-http' : 'grenache-nodejs-ws')
const name = process.env.NAME || 'tls_test'
const port = parseInt(process.env.PORT, 10)
const dir = process.env.CERTS

const secure = {
  key: fs.readFileSync(path.join(dir, 'server.key')),
  cert: fs.readFileSync(path.join(dir, 'server.pem')),
  ca: fs.readFileSync(path.join(dir, 'ca.pem')),
  requestCert: true,
  rejectUnauthorized: true,
  verifyClient: (info, cb) => cb(true)
}

const link = new Link({ grape: process.env.GRAPE })
link.start()

const peer = new PeerRPCServer(link, { secure })
peer.init()

const service = peer.transport('server')
service.listen(port)
service.on('request', (rid, key, payload, handler, cert) => {
  handler.reply(null, { fingerprint: cert && cert.fingerprint, payload })
})

const announce = () => link.announce(name, port, {}, () => {})
announce()
setInterval(announce, 1000)

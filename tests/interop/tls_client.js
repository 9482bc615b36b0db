'use strict'
// A Grenache client with TLS (grenache-nodejs-ws / -http `secure`) for the Rust interop
// tests: one request, then prints {"err": <message or null>, "data": <result or null>}.
// Env: GRAPE, TRANSPORT (ws | http), NAME, PAYLOAD (JSON), CERTS (a folder with ca.pem,
//      client.pem, client.key). The server certificate must chain to ca.pem and name the IP.
const fs = require('fs')
const path = require('path')
const Link = require('grenache-nodejs-link')

const transport = process.env.TRANSPORT || 'ws'
const { PeerRPCClient } = require(transport === 'http' ? 'grenache-nodejs-http' : 'grenache-nodejs-ws')
const name = process.env.NAME || 'tls_test'
const payload = JSON.parse(process.env.PAYLOAD || 'null')
const dir = process.env.CERTS

const secure = {
  key: fs.readFileSync(path.join(dir, 'client.key')),
  cert: fs.readFileSync(path.join(dir, 'client.pem')),
  ca: fs.readFileSync(path.join(dir, 'ca.pem'))
}

const link = new Link({ grape: process.env.GRAPE })
link.start()

const peer = new PeerRPCClient(link, { secure })
peer.init()

peer.request(name, payload, { timeout: 5000 }, (err, data) => {
  console.log(JSON.stringify({ err: err ? err.message : null, data: data === undefined ? null : data }))
  process.exit(0)
})

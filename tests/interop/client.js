'use strict'
// A Grenache client for the Rust interop tests: makes one request (or map) and prints one
// JSON line {"err": <message or null>, "data": <result or null>}, then exits.
// Env: GRAPE, TRANSPORT (ws | http), NAME, PAYLOAD (JSON), TIMEOUT (ms, default 5000),
//      COMPRESS (1 = grc-compress gzip, http only), MODE (request | map).
const Link = require('grenache-nodejs-link')

const transport = process.env.TRANSPORT || 'ws'
const { PeerRPCClient } = require(transport === 'http' ? 'grenache-nodejs-http' : 'grenache-nodejs-ws')
const name = process.env.NAME || 'rpc_test'
const payload = JSON.parse(process.env.PAYLOAD || 'null')
const timeout = parseInt(process.env.TIMEOUT || '5000', 10)
const compress = process.env.COMPRESS === '1'
const mode = process.env.MODE || 'request'

const link = new Link({ grape: process.env.GRAPE })
link.start()

const peer = new PeerRPCClient(link, {})
peer.init()

peer[mode](name, payload, { timeout, compress }, (err, data) => {
  console.log(JSON.stringify({ err: err ? err.message : null, data: data === undefined ? null : data }))
  process.exit(0)
})

'use strict'
// A Grenache subscriber (grenache-nodejs-ws PeerSub) for the Rust interop tests.
// Env: GRAPE (grape API URL), NAME (name to subscribe to), COUNT (messages to wait for).
// Prints one JSON line per message, {"type":"text"|"binary","data":<string>}, and exits 0
// after COUNT messages; exits 1 on an error or after 20 s.
const Link = require('grenache-nodejs-link')
const { PeerSub } = require('grenache-nodejs-ws')

const name = process.env.NAME || 'pub_test'
const count = parseInt(process.env.COUNT || '3', 10)

const link = new Link({ grape: process.env.GRAPE })
link.start()

const peer = new PeerSub(link, {})
peer.init()

let seen = 0
peer.on('message', (data) => {
  const binary = Buffer.isBuffer(data)
  console.log(JSON.stringify({ type: binary ? 'binary' : 'text', data: data.toString() }))
  if (++seen >= count) process.exit(0)
})
peer.on('error', (err) => {
  console.error('sub.js error:', err.message)
  process.exit(1)
})

peer.sub(name, { timeout: 10000 })
setTimeout(() => {
  console.error(`sub.js: only ${seen} of ${count} messages after 20 s`)
  process.exit(1)
}, 20000)

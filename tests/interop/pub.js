'use strict'
// A Grenache publisher (grenache-nodejs-ws PeerPub) for the Rust interop tests.
// Env: GRAPE (grape API URL), NAME (name to announce), PORT (port to listen on),
//      TAG (put in messages). Every 100 ms it publishes, alternately, the text frame
//      {"n":<i>,"from":TAG} and a binary frame (a Buffer) of the bytes "bin:<i>".
const Link = require('grenache-nodejs-link')
const { PeerPub } = require('grenache-nodejs-ws')

const name = process.env.NAME || 'pub_test'
const port = parseInt(process.env.PORT, 10)
const tag = process.env.TAG || 'node'

const link = new Link({ grape: process.env.GRAPE })
link.start()

const peer = new PeerPub(link, {})
peer.init()

const service = peer.transport('server')
service.listen(port)

let i = 0
setInterval(() => {
  i++
  if (i % 2 === 1) service.pub(JSON.stringify({ n: i, from: tag }))
  else service.pub(Buffer.from(`bin:${i}`))
}, 100)

const announce = () => link.announce(name, port, {}, () => {})
announce()
setInterval(announce, 1000)

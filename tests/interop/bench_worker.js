'use strict'
// Echo worker of the RPC benchmark (ci/bench-rpc.sh): replies with the payload as is.
// Env: GRAPE (grape API URL), TRANSPORT (ws | http), NAME (service name), PORT.
const Link = require('grenache-nodejs-link')

const transport = process.env.TRANSPORT || 'ws'
const { PeerRPCServer } = require(transport === 'http' ? 'grenache-nodejs-http' : 'grenache-nodejs-ws')
const name = process.env.NAME || 'bench_echo'
const port = parseInt(process.env.PORT, 10)

const link = new Link({ grape: process.env.GRAPE })
link.start()

const peer = new PeerRPCServer(link, transport === 'http' ? { timeout: 300000 } : {})
peer.init()

const service = peer.transport('server')
service.listen(port)
service.on('request', (rid, key, payload, handler) => handler.reply(null, payload))

const announce = () => link.announce(name, port, {}, () => {})
announce()
setInterval(announce, 1000)

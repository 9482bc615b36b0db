'use strict'
// The tutorial's server.js ("Microservices with Grenache"), with the grape URL and the port
// taken from GRAPE and PORT.
const { PeerRPCServer } = require('grenache-nodejs-ws')
const Link = require('grenache-nodejs-link')

function fibonacci (n) {
  if (n <= 1) {
    return 1
  }

  return fibonacci(n - 1) + fibonacci(n - 2)
}

const link = new Link({
  grape: process.env.GRAPE || 'http://127.0.0.1:30001'
})
link.start()

const peer = new PeerRPCServer(link, {})
peer.init()

const service = peer.transport('server')
service.listen(parseInt(process.env.PORT || '1337', 10))

setInterval(() => {
  link.announce('fibonacci_worker', service.port, {})
}, 1000)

service.on('request', (rid, key, payload, handler) => {
  const result = fibonacci(payload.number)
  handler.reply(null, result)
})

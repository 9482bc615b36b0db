'use strict'
// The test pattern of the stream interop tests, and a reader that checks a stream against it.
// Shared by stream_client.js and stream_worker.js.

// Bytes of a stream kept for `text`/`body`: larger streams are only counted and checked.
const KEEP = 65536

// Byte i of the test pattern (the Rust tests use the same formula).
const patternByte = (i) => (i ^ (i >>> 8) ^ (i >>> 16)) & 0xff

// Reads `stream` to its end, then calls done({len, pattern, body, text}): its length in bytes,
// whether it is a non-empty run of the test pattern, its first bytes (whole if at most KEEP)
// and its UTF-8 text (null when longer than KEEP). Returns a function giving the bytes read
// so far (for a stream that fails before its end).
function readPattern (stream, done) {
  let len = 0
  let pattern = true
  const kept = []
  stream.on('data', (d) => {
    for (let i = 0; i < d.length; i++) {
      if (d[i] !== patternByte(len + i)) { pattern = false; break }
    }
    if (len + d.length <= KEEP) kept.push(d)
    len += d.length
  })
  stream.on('end', () => {
    const body = Buffer.concat(kept)
    done({ len, pattern: pattern && len > 0, body, text: len <= KEEP ? body.toString('utf8') : null })
  })
  return () => len
}

module.exports = { patternByte, readPattern }

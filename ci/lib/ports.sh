# Free ports for the CI and benchmark scripts: sourced, not run.
#
#   . "$here/ci/lib/ports.sh"
#   read -r a b c <<<"$(free_ports 3)"
#
# One call gives distinct ports: each is held until all are found, so that the kernel cannot
# hand out one twice (two binds to port 0 in a row may get the same port once the first is
# closed). Needs node.

# free_ports N: prints N distinct ports free for both TCP and UDP on 127.0.0.1.
free_ports() {
    node -e '
      const net = require("net"), dgram = require("dgram");
      const want = Number(process.argv[1]); const out = new Set(); const held = [];
      (async () => {
        while (out.size < want) {
          const s = net.createServer(); await new Promise(r => s.listen(0, "127.0.0.1", r));
          const p = s.address().port; held.push(s);
          const u = dgram.createSocket("udp4");
          const ok = await new Promise(r => { u.once("error", () => r(false)); u.bind(p, "127.0.0.1", () => r(true)); });
          if (ok) { held.push(u); out.add(p); }
        }
        console.log([...out].join(" ")); held.forEach(h => h.close());
      })();' "$1"
}

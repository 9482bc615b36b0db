#!/usr/bin/env python3
"""Lookup latency in a 20-grape network with 3 grapes killed (issue #3, "Speed and memory").

Starts N grapes on 127.0.0.1 (Rust: the release `grape` binary; Node: tests/interop's
grenache-grape), each bootstrapped from grapes 0 and 1, announces a name through one grape,
measures how long until it is visible through every other grape, kills K grapes, then times
the first /lookup through each surviving grape (each such lookup meets the dead grapes in
its routing table for the first time). Prints a markdown table.

    python3 ci/bench-dead-grapes.py [rust|node|both]   (N=20, K=3; env N, K)
"""
import json, os, socket, subprocess, sys, time, urllib.request, signal

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/grenache-rs/target"))
N = int(os.environ.get("N", "20"))
K = int(os.environ.get("K", "3"))


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def post(aph, path, data, timeout=10):
    body = json.dumps({"data": data, "rid": "bench"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{aph}/{path}", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def run(kind):
    if kind == "rust":
        exe = [os.path.join(TARGET, "release", "grape")]
        if not os.path.exists(exe[0]):
            sys.exit(f"build it first: cargo build --release -p grenache-host --bin grape ({exe[0]})")
    else:
        exe = [os.path.join(HERE, "tests/interop/node_modules/.bin/grape")]
        if not os.path.exists(exe[0]):
            sys.exit("npm ci --prefix tests/interop first")
    dps = [free_port(socket.SOCK_DGRAM) for _ in range(N)]
    aphs = [free_port() for _ in range(N)]
    procs = []
    try:
        for i in range(N):
            bn = ",".join(f"127.0.0.1:{dps[j]}" for j in (0, 1) if j != i) or f"127.0.0.1:{dps[1]}"
            args = exe + ["--dp", str(dps[i]), "--aph", str(aphs[i]), "--bn", bn, "--dpa", "600000"]
            if kind == "rust":
                # Every lookup timed here must be a traversal, not an answer the grape kept
                # from the visibility polls (`--lookup_reuse`, 100 ms by default).
                args += ["--lookup_reuse", "0"]
            procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(3)
        for i in range(N):  # every grape looks something up once: tables fill
            post(aphs[i], "lookup", "warmup")
        name, port, src = "bench_dead_svc", 4321, 5
        t0 = time.monotonic()
        acks = post(aphs[src], "announce", [name, port])
        seen = {}
        while len(seen) < N - 1 and time.monotonic() - t0 < 30:
            for i in range(N):
                if i != src and i not in seen and post(aphs[i], "lookup", name):
                    seen[i] = time.monotonic() - t0
        visible = max(seen.values()) if len(seen) == N - 1 else None
        dead = [N - 1 - d for d in range(K)]  # neither the announcer nor grapes 0 and 1
        for d in dead:
            procs[d].send_signal(signal.SIGKILL)
            procs[d].wait()
        lat, found = [], 0
        for i in range(N):
            if i in dead:
                continue
            t = time.monotonic()
            r = post(aphs[i], "lookup", name, timeout=30)
            lat.append(time.monotonic() - t)
            found += bool(r)
        lat.sort()
        return {
            "acks": acks, "visible_all_s": visible,
            "p50_ms": 1000 * lat[len(lat) // 2], "max_ms": 1000 * lat[-1],
            "found": f"{found}/{len(lat)}",
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "both"
    kinds = ["rust", "node"] if which == "both" else [which]
    print(f"| {N} grapes, {K} killed | announce acks | visible on all others after | first lookup after the kill, p50 | max | answered with the worker |")
    print("|---|---|---|---|---|---|")
    for k in kinds:
        r = run(k)
        vis = f"{r['visible_all_s']*1000:.0f} ms" if r["visible_all_s"] is not None else "not within 30 s"
        print(f"| {k} grapes | {r['acks']} | {vis} | {r['p50_ms']:.0f} ms | {r['max_ms']:.0f} ms | {r['found']} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The whole test suite: what CI runs (through .ci/run) and what a developer runs before a push.
# It installs what it needs on a fresh machine (Rust targets, cargo-fuzz) and fails loudly when
# something cannot be had; it never skips a check silently.
#
#   ci/test.sh            everything
#   FUZZ_SECONDS=0 ci/test.sh    everything but the fuzzing runs
#   QEMU_TESTS=0 ci/test.sh      everything but the QEMU firmware integration (ci/qemu-test.sh,
#                                ci/qemu-riscv-test.sh)
#   BOARD_BUILDS=0 ci/test.sh    everything but the board firmware builds (ci/firmware-*.sh)
#   BENCH=1 ci/test.sh           also the grape benchmark (ci/bench-grape.sh; needs wrk, nginx)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

# A build cache outside the clone, so that CI's fresh clones reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/grenache-rs/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Incremental compilation data only helps edit-compile loops; in CI it grew the cache by
# gigabytes per run of changed code.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
FUZZ_SECONDS="${FUZZ_SECONDS:-10}"
# The hostile tests open a few thousand connections from attacker addresses at once.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

step() { printf '\n=== %s\n' "$*"; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }
# Installs Debian packages (a fresh machine may have no package lists yet).
apt_install() { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }

EMBEDDED_TARGETS=(thumbv7em-none-eabihf riscv32imc-unknown-none-elf)

step "toolchain"
cargo --version
rustc --version

step "Node reference packages (tests/interop: the real grenache-grape, -link, -ws, -http)"
command -v node >/dev/null 2>&1 || fail "node is not installed: the interop tests need Node.js 20 and npm"
command -v npm >/dev/null 2>&1 || fail "npm is not installed: the interop tests need Node.js 20 and npm"
node --version
(cd tests/interop && npm ci --no-audit --no-fund --loglevel=error) \
    || fail "npm ci in tests/interop failed (the npm registry must be reachable)"

step "chromium and chromedriver (host/tests/status_page.rs drives the grape's status page)"
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    apt_install chromium chromium-driver \
        || fail "chromium or chromedriver is missing and 'apt-get install -y chromium chromium-driver' failed"
fi
chromium --version
chromedriver --version

step "formatting"
cargo fmt --all -- --check || fail "cargo fmt reports unformatted code (run cargo fmt --all)"

step "clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "no import cycles between the modules of a crate (ci/check-module-cycles.py)"
python3 ci/check-module-cycles.py || fail "modules depend on each other in a cycle (see above)"

step "API docs build without warnings (broken intra-doc links, bad doc markup)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features

step "tests: workspace, default features"
cargo test --workspace

step "systemd unit: contrib/systemd/grape.service verified, its sandbox rated, its env file's flags taken"
# The grape binary the workspace tests just built is the one ExecStart is checked against.
bash contrib/systemd/check.sh "$CARGO_TARGET_DIR/debug/grape"

step "simulation: 1,000 grapes for 10 simulated minutes with churn and loss, thresholds asserted (grenache-sim check)"
# docs/SCALE.md has the scenario and the thresholds; a failure prints its seed. SIM_SEED picks
# another one.
cargo run --release -p grenache-sim -- check --seed "${SIM_SEED:-1}" \
    || fail "the simulated network missed a threshold (the seed is printed above)"

step "tests: grenache-core with every feature combination that runs on the host"
# Alone, so that the workspace's feature unification (grenache-tokio enables ed25519) does not
# hide the paths without it.
cargo test -p grenache-core
cargo test -p grenache-core --features ed25519

step "benchmarks compile and run once (criterion test mode)"
cargo test -p grenache-core --benches

step "core on embedded targets (no_std, no alloc, no read-modify-write atomics)"
# riscv32imc has no atomic read-modify-write instructions: a fetch_add or compare_exchange
# anywhere in the core fails this build, which is the check we want.
build_embedded() {
    local target=$1
    shift
    if rustup target list --installed 2>/dev/null | grep -qx "$target" \
        || rustup target add "$target" >/dev/null 2>&1; then
        cargo build -p "${PKG:-grenache-core}" --release --target "$target" "$@"
    elif cargo +nightly --version >/dev/null 2>&1 \
        && { rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src' \
             || rustup +nightly component add rust-src >/dev/null 2>&1; }; then
        echo "(no prebuilt std for $target: building core with -Zbuild-std)"
        cargo +nightly build -Zbuild-std=core -p "${PKG:-grenache-core}" --release --target "$target" "$@"
    else
        fail "cannot build for $target: neither 'rustup target add $target' nor nightly -Zbuild-std=core (rust-src) is available"
    fi
}
for target in "${EMBEDDED_TARGETS[@]}"; do
    for features in "" "ed25519" "defmt" "ed25519,defmt"; do
        echo "--- $target features=[${features}]"
        build_embedded "$target" --no-default-features ${features:+--features "$features"}
    done
done
for target in "${EMBEDDED_TARGETS[@]}"; do
    for features in "" "defmt"; do
        echo "--- grenache-embassy $target features=[${features}]"
        PKG=grenache-embassy build_embedded "$target" ${features:+--features "$features"}
    done
done
# The same rule as a text check, for a target that lacks only some of them: any read-modify-
# write method of the atomic types outside a comment (grep prints file:line:text, so a comment
# is text that starts with // after that prefix). `swap` also names slice::swap(i, j): only a
# swap with an Ordering argument is atomic.
rmw_atomics() {
    grep -rnE --include='*.rs' '\.(fetch_[a-z_]+|compare_exchange(_weak)?|compare_and_swap|swap)[[:space:]]*\(' "$1" \
        | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//' \
        | grep -vE '\.swap[[:space:]]*\(' \
        || true
    grep -rnE --include='*.rs' '\.swap[[:space:]]*\(.*Ordering' "$1" \
        | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//' \
        || true
}
# The check checks itself first: a planted `fetch_add` must be found, a comment naming one and a
# slice's `swap(i, j)` must not (a grep that can never match would pass silently).
planted=$(mktemp -d)
printf '%s\n' 'fn f(c: &AtomicU32, v: &mut [u8]) {' \
    '    // c.fetch_add(1) in a comment is not code' \
    '    v.swap(0, 1);' \
    '    c.fetch_add(1, Ordering::Relaxed);' '}' >"$planted/planted.rs"
self_check=$(rmw_atomics "$planted")
rm -rf "$planted"
[ "$(printf '%s\n' "$self_check" | grep -c .)" = 1 ] && printf '%s' "$self_check" | grep -q 'planted.rs:4:' \
    || fail "the atomics check does not find exactly the planted fetch_add: '$self_check'"
found=$(rmw_atomics core/src)
[ -z "$found" ] || fail "read-modify-write atomics found in core/src (no_std targets without them cannot build it):
$found"

if [ "$FUZZ_SECONDS" != "0" ]; then
    step "fuzzing every decoder for ${FUZZ_SECONDS}s each"
    cargo +nightly --version >/dev/null 2>&1 || fail "fuzzing needs the nightly toolchain (rustup toolchain install nightly)"
    command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
    targets=$(cd core/fuzz && cargo +nightly fuzz list)
    [ -n "$targets" ] || fail "no fuzz targets found in core/fuzz"
    for t in $targets; do
        log="$CARGO_TARGET_DIR/fuzz-$t.log"
        mkdir -p "$CARGO_TARGET_DIR"
        if ! (cd core/fuzz && CARGO_TARGET_DIR="$CARGO_TARGET_DIR/fuzz" \
            cargo +nightly fuzz run "$t" -- -max_total_time="$FUZZ_SECONDS" >"$log" 2>&1); then
            tail -n 40 "$log"
            fail "fuzz target $t failed (artifacts in core/fuzz/artifacts/$t)"
        fi
        echo "fuzz $t: $(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1)"
    done
fi

if [ "${QEMU_TESTS:-1}" != "0" ]; then
    step "firmware on QEMU mps2-an386: the board announces itself and serves fib to Node and Rust clients"
    bash ci/qemu-test.sh
    step "firmware on QEMU RISC-V virt (virtio-net): the board announces itself and serves fib to Node and Rust clients"
    bash ci/qemu-riscv-test.sh
fi

if [ "${BOARD_BUILDS:-1}" != "0" ]; then
    # Fails when the image outgrows issue #16's budget (96 KiB flash, 32 KiB static RAM).
    # Each board has a build cache of its own (other rustflags and targets than the host's).
    step "board firmware: STM32 NUCLEO-F429ZI worker builds, within the 96 KiB / 32 KiB budget"
    CARGO_TARGET_DIR="$HOME/.cache/grenache-rs/target-firmware-stm32" bash ci/firmware-stm32.sh
    step "board firmware: ESP32-C3 Wi-Fi worker builds (sizes for docs/BENCHMARKS.md)"
    CARGO_TARGET_DIR="$HOME/.cache/grenache-rs/target-firmware-esp" bash ci/firmware-esp32c3.sh
fi

# CI has no board: ci/hil.sh must fail at once and say so, both when the flasher is missing
# (this machine) and when it is there but sees no probe (a stub probe-rs that lists none).
step "hardware in the loop without a board: ci/hil.sh stm32-f429zi fails with \"no probe found\""
hil_stub=$(mktemp -d)
printf '#!/bin/sh\necho "No debug probes were found."\n' >"$hil_stub/probe-rs"
chmod +x "$hil_stub/probe-rs"
for hil_path in "$PATH" "$hil_stub:$PATH"; do
    hil_status=0
    hil_out=$(PATH="$hil_path" timeout 60 bash ci/hil.sh stm32-f429zi 2>&1) || hil_status=$?
    echo "$hil_out"
    [ "$hil_status" -ne 0 ] && [ "$hil_status" -ne 124 ] \
        || { rm -rf "$hil_stub"; fail "ci/hil.sh stm32-f429zi without a board exited with status $hil_status (expected a failure within 60 s)"; }
    grep -q 'FAILED: no probe found' <<<"$hil_out" \
        || { rm -rf "$hil_stub"; fail "ci/hil.sh stm32-f429zi without a board did not say 'no probe found'"; }
done
rm -rf "$hil_stub"
echo "ci/hil.sh without a board: failed at once with 'no probe found' (flasher missing, and no probe listed)"

if [ "${BENCH:-0}" != "0" ]; then
    step "grape benchmark (ci/bench-grape.sh, docs/BENCHMARKS.md section Grape)"
    command -v wrk >/dev/null 2>&1 || apt_install wrk \
        || fail "wrk is missing and 'apt-get install -y wrk' failed"
    # nginx is the reference row (ci/nginx-lookup.conf).
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt-get install -y nginx-light \
        || fail "nginx is missing and 'apt-get install -y nginx-light' failed"
    ci/bench-grape.sh
fi

step "all checks passed"

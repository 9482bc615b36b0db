# Shared parts of the firmware scripts (ci/qemu-test.sh, ci/firmware-stm32.sh,
# ci/firmware-esp32c3.sh): sourced, not run. Each script keeps its own settings, targets and
# checks; this file holds what they did alike, with the same output lines and failures.
#
#   here=$(cd "$(dirname "$0")/.." && pwd)
#   . "$here/ci/lib/firmware.sh"

# Prints a step header: a blank line, then `=== what`.
step() { printf '\n=== %s\n' "$*"; }

# Prints `FAILED: why` on stderr and ends the script with status 1.
fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

# firmware_build DIR TARGET BUILD_STD
# Builds the firmware crate in the current directory (DIR, e.g. firmware/qemu-mps2, names it in
# messages) for TARGET in release mode from its committed Cargo.lock (--locked). With TARGET's
# prebuilt std from rustup (installed or added now): cargo fmt --check, clippy -D warnings,
# build. Without it: a nightly build with -Zbuild-std=BUILD_STD (e.g. core, or core,alloc) and
# rust-src (no fmt or clippy there). Without either it fails loudly, never skips.
#
# The checkout's and the cargo home's paths are remapped in the image (panic locations name
# source files, and the firmware's path dependencies are compiled with absolute paths): the same
# sources give the same bytes wherever they are checked out, so the memory tables of the board
# READMEs (ci/board-memory-table.sh) hold in any clone. The flags join the firmware's own
# target rustflags (`--config` arrays are appended to those of .cargo/config.toml).
firmware_build() {
    local dir=$1 target=$2 build_std=$3 stale repo cargo_home
    stale="(if $dir/Cargo.lock is stale after a change of core or adapters/embassy: cd $dir && cargo update --workspace)"
    repo=$(cd ../.. && pwd)
    cargo_home=${CARGO_HOME:-$HOME/.cargo}
    local remap=(--config "target.$target.rustflags=[\"--remap-path-prefix=$repo=/grenache-rs\", \"--remap-path-prefix=$cargo_home=/cargo\"]")
    if rustup target list --installed 2>/dev/null | grep -qx "$target" \
        || rustup target add "$target" >/dev/null 2>&1; then
        cargo fmt --check || fail "cargo fmt reports unformatted firmware code (cd $dir && cargo fmt)"
        cargo clippy "${remap[@]}" --release --locked -- -D warnings || fail "clippy rejects the firmware $stale"
        cargo build "${remap[@]}" --release --locked || fail "the firmware does not build $stale"
    elif cargo +nightly --version >/dev/null 2>&1 \
        && { rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src' \
             || rustup +nightly component add rust-src >/dev/null 2>&1; }; then
        echo "rustup cannot add $target: building ${build_std//,/ and } from source with nightly -Zbuild-std"
        cargo +nightly build "${remap[@]}" --release --locked -Zbuild-std="$build_std" \
            || fail "the firmware does not build with nightly -Zbuild-std $stale"
    else
        fail "no $target: 'rustup target add $target' failed and no nightly with rust-src for -Zbuild-std"
    fi
}

# find_size_tool TOOL...
# Sets `sizetool` to the first of the TOOLs on the PATH (llvm-size -A style output), or fails
# naming them all (`size` is binutils' size).
find_size_tool() {
    local t list=""
    local -a names=()
    sizetool=""
    for t in "$@"; do
        if command -v "$t" >/dev/null 2>&1; then sizetool=$t; return 0; fi
        [ "$t" = size ] && t="binutils' size"
        names+=("$t")
    done
    # "a, b or c"
    if [ "${#names[@]}" -gt 1 ]; then
        list=$(printf '%s, ' "${names[@]:0:${#names[@]}-1}")
        list="${list%, } or "
    fi
    fail "no size tool (${list}${names[-1]})"
}

# firmware_sizes ELF FLASH RAM [OTHER]
# Prints the sizes of ELF's sections with $sizetool -A (see find_size_tool): one line per
# section of interest, in the ELF's order, then
#   flash: N bytes (K KiB)   static RAM: N bytes (K KiB) + stack   [tool -A]
# FLASH, RAM and OTHER are space-separated section names (".text .rodata"): flash sums the
# FLASH sections, static RAM the RAM ones, OTHER are only shown. Sets `fw_sizes` (the tool's
# whole output), `fw_flash` and `fw_ram` (the sums) for the caller's own checks and lines;
# fails if the tool cannot read ELF.
firmware_sizes() {
    local elf=$1 flash=$2 ram=$3 other=${4:-}
    # The section sets, as awk arrays F (flash), R (static RAM) and shown.
    local sets='
        BEGIN {
            n = split(flash, s, " "); for (i = 1; i <= n; i++) { F[s[i]] = 1; shown[s[i]] = 1 }
            n = split(ram, s, " "); for (i = 1; i <= n; i++) { R[s[i]] = 1; shown[s[i]] = 1 }
            n = split(other, s, " "); for (i = 1; i <= n; i++) shown[s[i]] = 1
        }
        ($1 in F) { flash_sum += $2 }
        ($1 in R) { ram_sum += $2 }'
    fw_sizes=$("$sizetool" -A "$elf") || fail "$sizetool cannot read $elf"
    printf '%s\n' "$fw_sizes" | awk -v tool="$sizetool" -v flash="$flash" -v ram="$ram" -v other="$other" "$sets"'
        ($1 in shown) { printf "  %-14s %8d\n", $1, $2 }
        END {
            printf "flash: %d bytes (%.1f KiB)   static RAM: %d bytes (%.1f KiB) + stack   [%s -A]\n",
                flash_sum, flash_sum / 1024, ram_sum, ram_sum / 1024, tool
        }'
    read -r fw_flash fw_ram < <(printf '%s\n' "$fw_sizes" \
        | awk -v flash="$flash" -v ram="$ram" "$sets"' END { print flash_sum + 0, ram_sum + 0 }')
}

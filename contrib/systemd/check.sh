#!/usr/bin/env bash
# Checks contrib/systemd/grape.service the way systemd reads it: `systemd-analyze verify`
# (syntax, directives, the command line) and `systemd-analyze security` (the sandbox's
# exposure rating must stay at or below $MAX_EXPOSURE). Installs systemd's tools with apt-get
# when they are missing, and fails loudly when it cannot.
#
#   contrib/systemd/check.sh PATH/TO/grape     (the built binary: verify checks ExecStart)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
grape=${1:?usage: contrib/systemd/check.sh PATH/TO/grape}
# The exposure `systemd-analyze security` gives this unit is 1.1 ("OK", systemd 252); 2.0
# leaves room for a directive newer systemd versions rate, not for dropping one. On the scale
# of --threshold: ten times the level it prints.
MAX_EXPOSURE=${MAX_EXPOSURE:-20}

fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "systemd-analyze is missing: installing systemd"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; } \
        || fail "cannot install systemd (apt-get install systemd failed): the unit check needs systemd-analyze"
fi
[ -x "$grape" ] || fail "$grape is not an executable grape binary"
systemd-analyze --version | head -n 1

# The unit as installed, but pointing at the built binary and at the env file of this tree.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed -e "s|^ExecStart=/usr/local/bin/grape |ExecStart=$(realpath "$grape") |" \
    -e "s|^EnvironmentFile=/etc/grenache/grape.env|EnvironmentFile=$here/grape.env|" \
    "$here/grape.service" >"$work/grape.service"
grep -q "^ExecStart=$(realpath "$grape") " "$work/grape.service" \
    || fail "grape.service has no 'ExecStart=/usr/local/bin/grape ' line to check"

# verify prints its complaints (unknown directives, bad values) and may still exit 0 for some:
# any output is a failure.
out=$(systemd-analyze verify --man=no "$work/grape.service" 2>&1) \
    || fail "systemd-analyze verify rejects grape.service:
$out"
[ -z "$out" ] || fail "systemd-analyze verify complains about grape.service:
$out"
echo "systemd-analyze verify: grape.service is clean"

rating=$(systemd-analyze security --offline=true --threshold="$MAX_EXPOSURE" "$work/grape.service" 2>&1) \
    || fail "the sandbox of grape.service is weaker than allowed (threshold $MAX_EXPOSURE, an exposure of $((MAX_EXPOSURE / 10)).$((MAX_EXPOSURE % 10))):
$rating"
printf '%s\n' "$rating" | tail -n 1

# The env file's flags, as the unit passes them, are flags the grape takes.
(
    set -a
    # shellcheck source=/dev/null
    . "$here/grape.env"
    set +a
    # shellcheck disable=SC2086
    "$grape" --dp "$GRAPE_DHT_PORT" --aph "$GRAPE_API_PORT" --bn "$GRAPE_BOOTSTRAP" \
        --log-format "$GRAPE_LOG_FORMAT" $GRAPE_OPTS --version >/dev/null
) || fail "grape does not take the flags of grape.env"
echo "grape takes the flags of grape.env"

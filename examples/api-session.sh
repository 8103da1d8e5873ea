#!/usr/bin/env bash
# One microVM driven through embervm's HTTP API with curl, step by step: start embervm with
# --api-sock and no kernel, configure the VM (boot source, machine, logger, metrics), start it,
# pause and resume it (the console must stop and then grow again), read its configuration,
# flush metrics, see a pre-boot request refused after the start, and end it with Ctrl-Alt-Del.
# Every request is printed with the HTTP status and body, so the output reads as a transcript.
#
#   examples/api-session.sh [KERNEL [EMBERVM]]
#
#   KERNEL   guest kernel; default build/tests/guests/guest-ticker.elf (the ticker test guest,
#            which prints "tick N" lines and resets on Ctrl-Alt-Del: the session relies on both)
#   EMBERVM  the embervm binary; default $EMBERVM, else build/embervm
#
# Exits 0 if every step gave the expected result, 1 otherwise (it runs as the meson test
# 'api-session', suite 'examples'). The VMM is killed and the temporary files are removed on
# any exit.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
kernel=${1:-$top/build/tests/guests/guest-ticker.elf}
embervm=${2:-${EMBERVM:-$top/build/embervm}}

fail() {
  echo "api-session: FAIL: $*" >&2
  # What the VMM said (its stderr before PUT /logger, the log file after), for the test log.
  for f in "${work:-}/stderr.txt" "${work:-}/vmm.log"; do
    [ -s "$f" ] && { echo "--- tail of ${f##*/}:" >&2; tail -n 20 "$f" >&2; }
  done
  exit 1
}
[ -x "$embervm" ] || fail "embervm binary '$embervm' not found (build it, or pass it as the 2nd argument)"
[ -r "$kernel" ] || fail "kernel '$kernel' not found (build the test guests, or pass a kernel as the 1st argument)"
command -v curl >/dev/null || fail "curl is needed"
kernel=$(realpath "$kernel")

work=$(mktemp -d "${TMPDIR:-/tmp}/embervm-api.XXXXXX")
sock=$work/api.sock
console=$work/console.txt
vmm_log=$work/vmm.log  # PUT /logger sends the VMM's log here
metrics=$work/metrics.json
pid=

cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Pretty-prints a JSON body (as is if it is not JSON).
pretty() { python3 -m json.tool 2>/dev/null <<<"$1" || printf '%s\n' "$1"; }

# api EXPECTED_STATUS METHOD PATH [JSON_BODY]: one request, printed with its answer; the body
# of the answer is left in $body (and printed indented over several lines with PRETTY=1). A
# status other than EXPECTED_STATUS ends the session.
body=
api() {
  local want=$1 method=$2 path=$3 data=${4:-}
  local args=(-s -S --unix-socket "$sock" -X "$method" -o "$work/body" -w '%{http_code}')
  if [ -n "$data" ]; then
    args+=(-H 'Content-Type: application/json' --data "$data")
    printf '\n> %s %s %s\n' "$method" "$path" "$data"
  else
    printf '\n> %s %s\n' "$method" "$path"
  fi
  local status
  if ! status=$(curl "${args[@]}" "http://localhost$path"); then
    kill -0 "$pid" 2>/dev/null || fail "embervm has exited (the guest ended early?)"
    fail "curl could not reach $sock"
  fi
  body=$(cat "$work/body")
  if [ -n "$body" ] && [ -n "${PRETTY:-}" ]; then
    printf '< %s\n' "$status"
    pretty "$body" | sed 's/^/    /'
  elif [ -n "$body" ]; then
    printf '< %s %s\n' "$status" "$body"
  else
    printf '< %s\n' "$status"
  fi
  [ "$status" = "$want" ] || fail "$method $path: expected HTTP $want, got $status"
}

# expect_field NAME VALUE: the answer's JSON field NAME must be VALUE.
expect_field() {
  local got
  got=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$body" "$1" 2>/dev/null)
  [ "$got" = "$2" ] || fail "expected \"$1\": \"$2\" in the answer, got \"$got\""
}

# expect_fault: the answer must be {"fault_message": "<non-empty>"}.
expect_fault() {
  python3 -c 'import json,sys; assert json.loads(sys.argv[1])["fault_message"]' "$body" 2>/dev/null ||
    fail "expected a JSON body with a non-empty fault_message"
}

lines() { wc -l <"$console" | tr -d ' '; }
# Waits (up to $2 s, scaled like the tests' timeouts) until the console has more than $1 lines.
scale=${EMBERVM_TEST_TIMEOUT_MULTIPLIER:-1}
wait_lines_above() {
  local i
  for ((i = 0; i < $2 * scale * 10; i++)); do
    [ "$(lines)" -gt "$1" ] && return 0
    sleep 0.1
  done
  return 1
}
# Waits (up to 10 s, scaled) until the console stops growing for 0.5 s: the ticker prints every
# few ms while it runs, so a quiet half second means the output that was on its way has landed.
wait_quiet() {
  local i last now quiet=0
  last=$(lines)
  for ((i = 0; i < 100 * scale; i++)); do
    sleep 0.1
    now=$(lines)
    if [ "$now" = "$last" ]; then quiet=$((quiet + 1)); [ $quiet -ge 5 ] && return 0; else quiet=0; fi
    last=$now
  done
  return 1
}
note() { printf '  # %s\n' "$*"; }

echo "# embervm --api-sock $sock --id session-vm --serial-out console.txt"
"$embervm" --api-sock "$sock" --id session-vm --serial-out "$console" </dev/null 2>"$work/stderr.txt" &
pid=$!
for _ in $(seq 200); do
  [ -S "$sock" ] && break
  kill -0 "$pid" 2>/dev/null || fail "embervm exited before serving the API"
  sleep 0.05
done
[ -S "$sock" ] || fail "no API socket at $sock after 10 s"
note "pid $pid, serving the API"

api 200 GET /
expect_field state "Not started"

api 204 PUT /boot-source "{\"kernel_image_path\": \"$kernel\", \"boot_args\": \"console=ttyS0\"}"
api 204 PUT /machine-config '{"vcpu_count": 1, "mem_size_mib": 64}'
api 204 PUT /logger "{\"log_path\": \"$vmm_log\", \"level\": \"Info\", \"show_level\": true}"
api 204 PUT /metrics "{\"metrics_path\": \"$metrics\"}"

note "a run-time request before the start is refused:"
api 400 PATCH /vm '{"state": "Paused"}'
expect_fault

api 204 PUT /actions '{"action_type": "InstanceStart"}'
api 200 GET /
expect_field state "Running"

wait_lines_above 1 10 || fail "the guest printed nothing in $((10 * scale)) s"
running=$(lines)
note "running: console has $running lines, last: $(tail -n 1 "$console")"

api 204 PATCH /vm '{"state": "Paused"}'
api 200 GET /
expect_field state "Paused"
wait_quiet || fail "the console still grows $((10 * scale)) s after the VM was paused"
before=$(lines)
sleep 1
after=$(lines)
note "paused: console has $before lines, 1 s later $after lines"
[ "$before" = "$after" ] || fail "the console grew while the VM was paused ($before -> $after lines)"

api 204 PATCH /vm '{"state": "Resumed"}'
wait_lines_above "$after" 10 || fail "the console did not grow within $((10 * scale)) s after the VM was resumed"
resumed=$(lines)
note "resumed: the console has $resumed lines, last: $(tail -n 1 "$console")"
note "(the ticker paces itself by the TSC, which ran on while paused: it skips the ticks it missed)"

PRETTY=1 api 200 GET /vm/config

api 204 PUT /actions '{"action_type": "FlushMetrics"}'
[ -s "$metrics" ] || fail "FlushMetrics wrote nothing to $metrics"
note "last line of the metrics file, top-level sections (first 3 fields of each):"
python3 - "$metrics" <<'PY' || fail "the metrics file's last line is not a JSON object"
import json, sys
with open(sys.argv[1]) as f:
    last = [l for l in f if l.strip()][-1]
m = json.loads(last)
for key, value in m.items():
    if isinstance(value, dict):
        shown = dict(list(value.items())[:3])
        more = f" (+{len(value) - 3} more)" if len(value) > 3 else ""
        print(f"    {key}: {json.dumps(shown)}{more}")
    else:
        print(f"    {key}: {json.dumps(value)}")
PY

note "a pre-boot request after the start is refused:"
api 400 PUT /boot-source "{\"kernel_image_path\": \"$kernel\"}"
expect_fault

api 204 PUT /actions '{"action_type": "SendCtrlAltDel"}'
note "waiting for the guest to reset and the VMM to exit"
for _ in $(seq 100); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$pid" 2>/dev/null && fail "embervm still running 10 s after SendCtrlAltDel"
wait "$pid"
status=$?
pid=
note "console ends with: $(grep -v '^tick ' "$console" | tail -n 1)"
note "VMM log: $(grep -c . "$vmm_log") lines, ending with: $(tail -n 1 "$vmm_log")"
note "embervm exit status: $status"
[ "$status" = 0 ] || fail "expected exit status 0 (guest reset), got $status"
echo
echo "api-session: PASS"

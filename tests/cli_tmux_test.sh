#!/usr/bin/env bash
# mamba-cli -i on a real terminal: tmux runs it in a detached pane, send-keys types, and
# capture-pane reads the screen. Checks that text streams while it is generated, that a second
# line continues the sequence, that /reset starts over, that Ctrl-C stops a long generation and
# returns to the prompt, that Ctrl-C at the prompt quits with 130, that Ctrl-D quits with 0, and
# that without a prompt (and without -i) a terminal on stdin gets an error, not a wait.
#
#   tests/cli_tmux_test.sh MAMBA_CLI TMP_DIR        (run by tests/test_cli_interactive.cpp)
#
# Every wait polls with a deadline, never a fixed long sleep, so the script is quick on a fast
# build and still passes on a sanitizer build several times slower. Uses its own tmux server
# (-L), so a tmux the user runs is never touched. Prints "ok" and exits 0 when every check
# passes; otherwise prints what failed, with the screen, and exits 1.
set -u

CLI=$1
TMP=$2
TIMEOUT=20  # seconds any single wait may take before the check fails
mkdir -p "$TMP"
SOCKET="mamba-cli-test-$$"
T() { tmux -L "$SOCKET" -f /dev/null "$@"; }
trap 'T kill-server >/dev/null 2>&1' EXIT
export TERM=${TERM:-xterm}
[ "$TERM" = dumb ] && export TERM=xterm

fail() {
  echo "FAIL: $*"
  for s in turns ctrlc noprompt; do
    if T has-session -t "$s" 2>/dev/null; then
      echo "---- screen of '$s' ----"
      T capture-pane -p -J -S - -t "$s"
    fi
  done
  exit 1
}

screen() { T capture-pane -p -J -S - -t "$1"; }

# wait_for SESSION DESCRIPTION COMMAND...: polls until COMMAND succeeds.
wait_for() {
  local session=$1 what=$2
  shift 2
  local deadline=$((SECONDS + TIMEOUT))
  until "$@"; do
    [ "$SECONDS" -ge "$deadline" ] && fail "$session: timed out waiting for $what"
    sleep 0.05
  done
}
has() { screen "$1" | grep -qF -- "$2"; }
count() { screen "$1" | grep -cF -- "$2"; }
count_is() { [ "$(count "$1" "$2")" -ge "$3" ]; }
# The last non-blank line is the bare prompt marker "> ".
at_prompt() { [ "$(screen "$1" | sed 's/[[:space:]]*$//; /^$/d' | tail -n 1)" = ">" ]; }
file_is() { [ -s "$1" ] && [ "$(cat "$1")" = "$2" ]; }

# Each pane runs the CLI under a shell that survives Ctrl-C (the CLI itself gets the default
# disposition back, then installs its own handler) and records the exit code.
cat >"$TMP/wrap.sh" <<'EOF'
trap true INT
rc_file=$1
shift
"$@"
echo $? >"$rc_file"
exec sleep 600
EOF

# ---- reference text: the same turns over a pipe (test_cli.cpp checks those against the library)
L1='def add(a, b):'
L2='    return a + b'
first=$(printf '%s\n' "$L1" | "$CLI" -i -n 16 --no-display-prompt 2>/dev/null) || fail "reference run"
both=$(printf '%s\n%s\n' "$L1" "$L2" | "$CLI" -i -n 16 --no-display-prompt 2>/dev/null) ||
  fail "reference run"
[ "${both#"$first"}" != "$both" ] || fail "the two-turn reference does not start with the first turn"
second=${both#"$first"}
# A line the first turn prints (its longest) and one only the second turn prints.
line1=$(printf '%s\n' "$first" | sed 's/[[:space:]]*$//' | awk 'length > length(best) { best = $0 } END { print best }')
line2=""
while IFS= read -r l; do
  l=$(printf '%s' "$l" | sed 's/[[:space:]]*$//')
  [ -z "${l//[[:space:]]/}" ] && continue
  printf '%s\n' "$first" | sed 's/[[:space:]]*$//' | grep -qxF -- "$l" && continue
  line2=$l
  break
done <<<"$second"
[ ${#line1} -ge 8 ] || fail "the first turn's text is too short to recognise: '$first'"
[ -n "$line2" ] || fail "the second turn prints no line of its own: '$second'"

# ---- turns: streaming, a continued second turn, /reset, Ctrl-D --------------------------------
rm -f "$TMP/rc_turns"
T new-session -d -s turns -x 200 -y 50 "sh '$TMP/wrap.sh' '$TMP/rc_turns' '$CLI' -i -n 16"
wait_for turns "the prompt marker" at_prompt turns
T send-keys -t turns "$L1" Enter
wait_for turns "the first turn's text" has turns "$line1"
wait_for turns "the prompt after the first turn" at_prompt turns
T send-keys -t turns "$L2" Enter
wait_for turns "the second turn's text" has turns "$line2"
wait_for turns "the prompt after the second turn" at_prompt turns
T send-keys -t turns "/reset" Enter
wait_for turns "the reset notice" has turns "[reset: a new sequence starts]"
# From a fresh state the first line gives the first turn's text again.
T send-keys -t turns "$L1" Enter
wait_for turns "the first turn's text again after /reset" count_is turns "$line1" 2
wait_for turns "the prompt after /reset" at_prompt turns
T send-keys -t turns C-d
wait_for turns "exit code 0 after Ctrl-D" file_is "$TMP/rc_turns" 0

# ---- Ctrl-C: a long generation streams, stops on Ctrl-C, a second Ctrl-C quits ----------------
rm -f "$TMP/rc_ctrlc"
T new-session -d -s ctrlc -x 200 -y 50 \
  "sh '$TMP/wrap.sh' '$TMP/rc_ctrlc' '$CLI' -i -n 1000000 --ignore-eos -p '$L1'"
wait_for ctrlc "the first generated line" has ctrlc "$line1"
# Text keeps arriving while the generation runs: that is streaming.
n0=$(screen ctrlc | wc -c)
grows() { [ "$(screen ctrlc | wc -c)" -gt "$n0" ]; }
wait_for ctrlc "more text while generating" grows
[ -e "$TMP/rc_ctrlc" ] && fail "ctrlc: exited during the generation"
at_prompt ctrlc && fail "ctrlc: back at the prompt before Ctrl-C"
T send-keys -t ctrlc C-c
wait_for ctrlc "the stop notice" has ctrlc "[stopped]"
wait_for ctrlc "the prompt after Ctrl-C" at_prompt ctrlc
[ -e "$TMP/rc_ctrlc" ] && fail "ctrlc: exited on the first Ctrl-C"
T send-keys -t ctrlc C-c
wait_for ctrlc "exit code 130 after a second Ctrl-C" file_is "$TMP/rc_ctrlc" 130
has ctrlc "cancelled; state: " || fail "ctrlc: no summary line"

# ---- no prompt, stdin a terminal, no -i: one error line that says what to do ------------------
rm -f "$TMP/rc_noprompt"
T new-session -d -s noprompt -x 200 -y 50 "sh '$TMP/wrap.sh' '$TMP/rc_noprompt' '$CLI' -n 1"
wait_for noprompt "exit code 1 without a prompt" file_is "$TMP/rc_noprompt" 1
has noprompt "error: no prompt: give -p TEXT, -f FILE or --prompt-ids 1,2,3, pipe text on stdin, or use -i" ||
  fail "noprompt: no error line"

echo ok

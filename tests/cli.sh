# tests/cli.sh: command-line cases, sourced by tests/run with $NFC set and the helpers
# pass/fail defined. Each case checks exit status and a distinctive part of the output.

# expect STATUS 'description' 'grep pattern or empty' command...
expect() {
    local want=$1 desc=$2 pat=$3
    shift 3
    local out rc
    out=$("$@" 2>&1)
    rc=$?
    if [ $rc -ne "$want" ]; then
        printf '%s\n' "$out" | tail -10
        fail "$NFC: cli: $desc: exit status $rc, expected $want"
    elif [ -n "$pat" ] && ! printf '%s\n' "$out" | grep -q -e "$pat"; then
        printf '%s\n' "$out" | tail -10
        fail "$NFC: cli: $desc: output lacks '$pat'"
    elif printf '%s\n' "$out" | grep -q -e 'Sanitizer' -e 'runtime error:'; then
        printf '%s\n' "$out" | tail -20
        fail "$NFC: cli: $desc: sanitizer report"
    else
        pass
    fi
}

expect 0 "--help" "usage: nfc" "$NFC" --help
expect 0 "--version" "^nfc [0-9]" "$NFC" --version
expect 2 "no arguments" "usage: nfc" "$NFC"
expect 2 "unknown command" "did you mean 'check'" "$NFC" chek x.flow
expect 2 "unknown option" "unknown option '--frobnicate'" "$NFC" check --frobnicate examples/moons.flow
expect 2 "bad dump stage" "unknown dump" "$NFC" check --dump=nope examples/moons.flow
expect 2 "check without files" "needs at least one" "$NFC" check
expect 1 "missing file" "nope.flow: error: cannot open: No such file" "$NFC" check tests/nope.flow
expect 1 "directory as file" "cannot read" "$NFC" check tests
for f in examples/*.flow; do
    expect 0 "check $f" "total parameters" "$NFC" check "$f"
    expect 0 "dump $f" "^  output %" "$NFC" check --dump=graph "$f"
done
expect 0 "check several files" "flow maf8" "$NFC" check examples/moons.flow examples/maf.flow
expect 1 "one bad file among good ones" "flow moons" "$NFC" check examples/moons.flow tests/nope.flow

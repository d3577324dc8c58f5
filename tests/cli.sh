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
expect 0 "train --help" "--steps" "$NFC" train --help
expect 0 "logprob -h" "--weights" "$NFC" logprob -h
expect 0 "MODEL -o ... --help" "--emit" "$NFC" examples/moons.flow -o x.so --help
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

# running models: bad input names the file and what was expected
tmp_cli=$(mktemp -d)
printf '0.1,0.2\n0.3,0.4\n' > "$tmp_cli/x2.csv"
printf '0.1,0.2,0.3\n' > "$tmp_cli/x3.csv"
printf '0.1,0.2\n0.3,abc\n' > "$tmp_cli/bad.csv"
printf 'not a safetensors file' > "$tmp_cli/bad.safetensors"
expect 1 "wrong column count" "x3.csv: expected 2 columns (the input 'x' of flow 'moons' is f32\[2\]), found 3" \
    "$NFC" logprob examples/moons.flow --data "$tmp_cli/x3.csv" -o "$tmp_cli/lp.csv"
expect 1 "non-numeric field" "bad.csv:2: field 2 is not a number" "$NFC" eval examples/moons.flow --data "$tmp_cli/bad.csv"
expect 1 "missing data file" "nope.csv" "$NFC" eval examples/moons.flow --data "$tmp_cli/nope.csv"
expect 1 "context missing" "give it with --context FILE" "$NFC" eval examples/cmoons.flow --data "$tmp_cli/x2.csv"
printf '1,0\n0,1\n1,0\n' > "$tmp_cli/c3.csv"
expect 1 "context rows" "c3.csv: 3 rows, but there are 2 samples" \
    "$NFC" eval examples/cmoons.flow --data "$tmp_cli/x2.csv" --context "$tmp_cli/c3.csv"
expect 1 "corrupt weights" "bad.safetensors" "$NFC" eval examples/moons.flow --data "$tmp_cli/x2.csv" --weights "$tmp_cli/bad.safetensors"
expect 1 "model errors through run commands" "error: unknown layer" "$NFC" eval tests/bad/name_unknown_layer.flow --data "$tmp_cli/x2.csv"
expect 2 "sample without -n" "missing -n" "$NFC" sample examples/moons.flow -o "$tmp_cli/s.csv"
expect 2 "bad dtype" "--dtype is f32 or f64" "$NFC" sample examples/moons.flow -n 3 --dtype f16 -o "$tmp_cli/s.csv"
expect 0 "sample then eval (JIT)" "bits per dimension" sh -c "'$NFC' sample examples/moons.flow -n 200 -o '$tmp_cli/s.npy' --init-scale 0.3 && '$NFC' eval examples/moons.flow --data '$tmp_cli/s.npy' --init-scale 0.3"
expect 0 "conditional sample with one context row" "" sh -c "printf '1,0\n' > '$tmp_cli/c1.csv' && '$NFC' sample examples/cmoons.flow -n 50 --context '$tmp_cli/c1.csv' -o '$tmp_cli/cs.csv'"
expect 0 "emit llvm" "" "$NFC" examples/moons.flow --emit=llvm -o "$tmp_cli/m.ll"
expect 0 "emitted IR names the programs" "define.*forward" cat "$tmp_cli/m.ll"
# nfc data --log-density-of: the exact density at given points, the same as --log-density
# gives at the samples themselves
expect 0 "data --log-density-of" "log-density of moons at 300 points" sh -c "'$NFC' data moons -n 300 --seed 4 -o '$tmp_cli/d.csv' --log-density '$tmp_cli/d_lp.csv' && '$NFC' data moons --log-density-of '$tmp_cli/d.csv' -o '$tmp_cli/d_lp2.csv'"
if cmp -s "$tmp_cli/d_lp.csv" "$tmp_cli/d_lp2.csv"; then pass; else fail "$NFC: cli: data --log-density-of differs from --log-density at the same points"; fi
expect 1 "data --log-density-of: wrong columns" "2 columns, but gmm is 8-D" "$NFC" data gmm --log-density-of "$tmp_cli/d.csv" -o "$tmp_cli/x.csv"
expect 1 "data --log-density-of: missing file" "nope.csv" "$NFC" data moons --log-density-of "$tmp_cli/nope.csv" -o "$tmp_cli/x.csv"
expect 2 "data --log-density-of with -n" "takes no -n" "$NFC" data moons --log-density-of "$tmp_cli/d.csv" -n 3 -o "$tmp_cli/x.csv"
expect 2 "data --log-density-of without -o" "missing -o" "$NFC" data moons --log-density-of "$tmp_cli/d.csv"
# --no-fuse (docs/codegen.md, "Fusion"): the same log p(x), within rounding (fused code may
# contract a multiply and an add into an FMA), for a flow with MLPs (matrix products with a
# bias and an activation) and for MAF (masked products, the sequential inverse)
expect 0 "--help mentions --no-fuse" "--no-fuse" "$NFC" --help
"$NFC" data moons -n 300 --seed 2 -o "$tmp_cli/f.csv" >/dev/null 2>&1
"$NFC" data gmm --dim 8 -n 300 --seed 2 -o "$tmp_cli/f8.csv" >/dev/null 2>&1
for fl in moons:f.csv maf:f8.csv; do
    m=${fl%%:*} d=${fl#*:}
    expect 0 "logprob $m (fused)" "" "$NFC" logprob "examples/$m.flow" --data "$tmp_cli/$d" --init-scale 0.3 -o "$tmp_cli/lp_f.csv"
    expect 0 "logprob $m --no-fuse" "" "$NFC" logprob "examples/$m.flow" --data "$tmp_cli/$d" --init-scale 0.3 --no-fuse -o "$tmp_cli/lp_u.csv"
    expect 0 "logprob $m: --no-fuse gives the same log p" "^same 300$" sh -c "paste -d, '$tmp_cli/lp_f.csv' '$tmp_cli/lp_u.csv' | awk -F, '{ d = \$1 - \$2; if (d < 0) d = -d; s = \$2 < 0 ? -\$2 : \$2; if (s < 1) s = 1; if (d <= 1e-5 * s) k++ } END { print \"same\", k }'"
done
rm -rf "$tmp_cli"

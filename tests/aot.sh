# tests/aot.sh: ahead-of-time builds from the command line, sourced by tests/run after
# tests/cli.sh (which defines expect) with $NFC set and the helpers pass/fail defined.
# Cases: usage errors; for every example a shared library whose generated header compiles
# with -Wall -Wextra -Werror in a C program (tests/aot_driver.c) that calls every exported
# function and gives the JIT's log p(x) (1e-5 relative); weights loaded at run time from a
# trained checkpoint; three models linked into one program; and, in the normal build (the
# cross toolchain and qemu-user come from tools/bootstrap --cross), every example built for
# aarch64-linux-gnu with and without Sleef, linked with gcc-aarch64-linux-gnu and run under
# qemu-aarch64, giving the host's log p(x) within 1e-5 relative.

aot_dir=$(mktemp -d /tmp/nfc_aot_cli.XXXXXX)

expect 2 "aot: no output" "missing -o" "$NFC" examples/moons.flow
expect 2 "aot: bad --emit" "--emit is obj, so" "$NFC" examples/moons.flow --emit=exe -o "$aot_dir/x"
expect 2 "aot: -c with --emit=so" "contradicts" "$NFC" examples/moons.flow -c --emit=so -o "$aot_dir/x.so"
expect 1 "aot: bad symbol prefix" "not a C identifier" "$NFC" examples/moons.flow --name 9lives -o "$aot_dir/x.so"
expect 1 "aot: unknown target" "target" "$NFC" examples/moons.flow --target nonsense-cpu-os -o "$aot_dir/x.so"
expect 1 "aot: missing linker" "cannot run the linker" "$NFC" examples/moons.flow --cc /no/such/cc -o "$aot_dir/x.so"
[ ! -e "$aot_dir/x.so" ] && [ ! -e "$aot_dir/x.h" ] && pass || fail "$NFC: aot: a failed build left files behind"

# aot_compare NAME LP_CSV REF_CSV: the last column of LP_CSV against REF_CSV, 1e-5 relative
aot_compare() {
    local bad
    bad=$(awk -F, 'NR == FNR { lp[FNR] = $NF; n = FNR; next }
                   { d = lp[FNR] - $1; if (d < 0) d = -d; a = $1 < 0 ? -$1 : $1
                     if (d > 1e-5 * (1 + a)) { print FNR ": " lp[FNR] " vs " $1; exit } m = FNR }
                   END { if (m != n) print "rows: " n " vs " m }' "$2" "$3")
    if [ -n "$bad" ]; then fail "$NFC: aot: $1: log p differs from the JIT: $bad"; else pass; fi
}

# aot_inputs OUT FLOW: the x columns of a driver's output, and the context the driver used
aot_ref() {   # aot_ref NAME FLOW DRIVER_OUT [nfc options...] -> REF_CSV in $aot_dir/NAME.ref.csv
    local name=$1 flow=$2 out=$3 C
    shift 3
    awk -F, '{ OFS = ","; NF = NF - 1; print }' "$out" > "$aot_dir/$name.x.csv"
    C=$("$NFC" check "$flow" | awk '$1 == "context" { sub(/.*\[/, "", $3); sub(/\]/, "", $3); print $3 }')
    local ctx=()
    if [ -n "$C" ]; then
        awk -v C="$C" 'BEGIN { for (r = 0; r < 61; r++) { s = ""; for (k = 0; k < C; k++) s = s (k ? "," : "") (((r * C + k) % 3) == 0); print s } }' > "$aot_dir/$name.c.csv"
        ctx=(--context "$aot_dir/$name.c.csv")
    fi
    "$NFC" logprob "$flow" --data "$aot_dir/$name.x.csv" "${ctx[@]}" "$@" -o "$aot_dir/$name.ref.csv"
}

aot_cflags=(-std=c11 -Wall -Wextra -Werror -O1)
aot_flow_name() { "$NFC" check "$1" | awk 'NR == 1 { print $2 }'; }

for f in examples/*.flow; do
    e=$(basename "$f" .flow)
    n=$(aot_flow_name "$f")
    N=$(printf '%s' "$n" | tr '[:lower:]' '[:upper:]')
    if "$NFC" "$f" --embed --init-scale 0.5 -o "$aot_dir/$e.so" 2> "$aot_dir/err"; then pass; else cat "$aot_dir/err"; fail "$NFC: aot: build $f"; continue; fi
    if cc "${aot_cflags[@]}" -DPFX="$n" -DUP="$N" -include "$aot_dir/$e.h" tests/aot_driver.c "$aot_dir/$e.so" -lm -o "$aot_dir/drv_$e" 2> "$aot_dir/err"; then
        pass
    else
        cat "$aot_dir/err"; fail "$NFC: aot: the header of $f does not compile warning-free"; continue
    fi
    if "$aot_dir/drv_$e" > "$aot_dir/$e.out" 2> "$aot_dir/err"; then pass; else cat "$aot_dir/err"; fail "$NFC: aot: driver for $f"; continue; fi
    aot_ref "$e" "$f" "$aot_dir/$e.out" --init-scale 0.5 && aot_compare "$e (host)" "$aot_dir/$e.out" "$aot_dir/$e.ref.csv"
done

# weights loaded at run time: a library without embedded weights and a trained checkpoint
"$NFC" data moons -n 512 -o "$aot_dir/moons.npy" > /dev/null 2>&1
if "$NFC" train examples/moons.flow --data "$aot_dir/moons.npy" --steps 20 --batch 64 -o "$aot_dir/w.safetensors" > /dev/null 2>&1 &&
   "$NFC" examples/moons.flow -o "$aot_dir/lw.so" &&
   cc "${aot_cflags[@]}" -DPFX=moons -DUP=MOONS -include "$aot_dir/lw.h" tests/aot_driver.c "$aot_dir/lw.so" -lm -o "$aot_dir/drv_lw" &&
   "$aot_dir/drv_lw" "$aot_dir/w.safetensors" > "$aot_dir/lw.out"; then
    pass
    aot_ref lw examples/moons.flow "$aot_dir/lw.out" --weights "$aot_dir/w.safetensors" && aot_compare "load_weights" "$aot_dir/lw.out" "$aot_dir/lw.ref.csv"
else
    fail "$NFC: aot: library loading trained weights"
fi
expect 1 "aot: driver without weights" "load_weights_file returned -7" "$aot_dir/drv_lw" "$aot_dir/nope.safetensors"

# three models in one program: moons, maf8, and moons again under another prefix
cat > "$aot_dir/three.c" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include "moons.h"
#include "maf.h"
#include "moons2.h"
int main(void) {
    float x[2] = { 0.5f, 0.25f }, x8[8] = { 0 }, a, b, c;
    size_t w = (size_t)(MOONS_WORKSPACE_SIZE > MAF8_WORKSPACE_SIZE ? MOONS_WORKSPACE_SIZE : MAF8_WORKSPACE_SIZE);
    void *ws = aligned_alloc(64, w);
    if (moons_log_prob(1, x, &a, ws) || maf8_log_prob(1, x8, &b, ws) || other_log_prob(1, x, &c, ws)) return 1;
    printf("%.9g %.9g %.9g\n", a, b, c);
    free(ws);
    return a == c && a != b ? 0 : 1;
}
EOF
if "$NFC" examples/moons.flow --embed -c -o "$aot_dir/moons.o" && "$NFC" examples/maf.flow --embed -c -o "$aot_dir/maf.o" &&
   "$NFC" examples/moons.flow --embed --name other -c -o "$aot_dir/moons2.o" &&
   cc "${aot_cflags[@]}" -I"$aot_dir" "$aot_dir/three.c" "$aot_dir/moons.o" "$aot_dir/maf.o" "$aot_dir/moons2.o" -lsleef -lm -o "$aot_dir/three" &&
   "$aot_dir/three" > /dev/null; then
    pass
else
    fail "$NFC: aot: three models in one program"
fi

# aarch64 under qemu (normal build only: the sanitizers add nothing to a cross build)
case "$NFC" in
*/asan/*) ;;
*)
    if ! command -v aarch64-linux-gnu-gcc > /dev/null || ! command -v qemu-aarch64 > /dev/null; then
        fail "aot: aarch64-linux-gnu-gcc or qemu-aarch64 missing (tools/bootstrap --cross installs them)"
    else
        for f in examples/*.flow; do
            e=$(basename "$f" .flow)
            n=$(aot_flow_name "$f")
            N=$(printf '%s' "$n" | tr '[:lower:]' '[:upper:]')
            for sl in sleef nosleef; do
                opt=(); libs=(-lsleef -lm)
                if [ $sl = nosleef ]; then opt=(--no-sleef); libs=(-lm); fi
                o="$aot_dir/${e}_a64_$sl"
                if "$NFC" "$f" --target aarch64-linux-gnu "${opt[@]}" --embed --init-scale 0.5 -c -o "$o.o" 2> "$aot_dir/err" &&
                   aarch64-linux-gnu-gcc "${aot_cflags[@]}" -DPFX="$n" -DUP="$N" -include "$o.h" tests/aot_driver.c "$o.o" "${libs[@]}" -o "$o" 2>> "$aot_dir/err" &&
                   qemu-aarch64 -L /usr/aarch64-linux-gnu "$o" > "$o.out" 2>> "$aot_dir/err"; then
                    pass
                    aot_compare "$e aarch64 $sl" "$o.out" "$aot_dir/$e.ref.csv"
                else
                    cat "$aot_dir/err"
                    fail "$NFC: aot: $f for aarch64 ($sl) under qemu"
                fi
            done
        done
        if "$NFC" examples/moons.flow --target aarch64-linux-gnu --no-sleef --embed -o "$aot_dir/a64.so" &&
           ! readelf -d "$aot_dir/a64.so" | grep NEEDED | grep -v -e 'libc\.so' -e 'libm\.so' | grep -q .; then
            pass
        else
            fail "$NFC: aot: the aarch64 --no-sleef library needs more than libc and libm"
        fi
    fi
    ;;
esac

rm -rf "$aot_dir"

# tests/learn.sh: learning tests, measured against the truth. Sourced by tests/run after
# tests/train.sh, with $NFC set and the helpers pass/fail (and expect, from tests/cli.sh)
# defined. `nfc data` writes each test point's exact log-density, so the true entropy of a
# data set (minus the mean exact log-density of held-out samples) is the floor of any
# model's test NLL; each case trains a flow with the JIT (the default backend) and checks how
# close it gets:
#   8gaussians   test NLL within 0.1 nats of the true entropy   (tests/learn/8gaussians.flow)
#   gmm, 8-D     test NLL within 0.5 nats of the true entropy   (tests/learn/gmm8.flow)
#   moons        samples land on the moons: their mean exact -log-density under the true
#                density, without the worst 1%, is within 0.15 nats of the same trimmed mean
#                of held-out data, and >= 95% of them lie within 0.3 (3 noise standard
#                deviations) of one of the two arcs (examples/moons.flow). Trimmed, because
#                the untrimmed mean is the mean of a quadratic in the distance to the arcs: one
#                sample of 5000 that the model sends 2.7 away moves it by 0.07 nats, and such
#                samples come and go with rounding (docs/training.md, "Learning results")
# Only in a normal build: under ASan these runs would take many minutes. Everything is
# seeded (data, initializer, batches: a batch is a pure function of the seed and the step),
# so the numbers are the same on every run on a given machine; the margins below leave room
# for the rounding differences between machines (f32, vector widths). Measured numbers and
# the longer runs: docs/training.md.

case "$NFC" in
*/asan/*) ;;
*)
ln_dir=$(mktemp -d /tmp/nfc_learn.XXXXXX)

ln_nll() { awk '/negative log-likelihood/ { print $3 }'; }
# ln_below A B MARGIN: A - B < MARGIN; ln_close A B MARGIN: |A - B| < MARGIN (A, B numbers)
ln_below() { awk -v a="$1" -v b="$2" -v m="$3" 'BEGIN { exit !(a ~ /^-?[0-9.]+$/ && b ~ /^-?[0-9.]+$/ && a - b < m) }'; }
ln_close() { awk -v a="$1" -v b="$2" -v m="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a ~ /^-?[0-9.]+$/ && b ~ /^-?[0-9.]+$/ && d < m) }'; }

# ln_gap NAME FLOW DATA N MARGIN TRAIN_ARGS...: train on N samples of DATA (seed 1), evaluate
# on 5000 others (seed 2), and compare the test NLL with the true entropy
ln_gap() {
    local name=$1 flow=$2 data=$3 n=$4 margin=$5
    shift 5
    local d="$ln_dir/$name"
    mkdir -p "$d"
    # shellcheck disable=SC2086
    if ! "$NFC" data $data -n "$n" --seed 1 -o "$d/train.npy" 2>"$d/err" ||
       ! "$NFC" data $data -n 5000 --seed 2 -o "$d/test.csv" --log-density "$d/test_lp.csv" 2>"$d/err"; then
        cat "$d/err"; fail "$NFC: learn: $name: nfc data failed"; return
    fi
    if ! "$NFC" train "$flow" --data "$d/train.npy" "$@" -o "$d/w.st" >"$d/log" 2>&1; then
        tail -5 "$d/log"; fail "$NFC: learn: $name: nfc train failed"; return
    fi
    local nll ent
    nll=$("$NFC" eval "$flow" --weights "$d/w.st" --data "$d/test.csv" 2>&1 | ln_nll)
    ent=$(awk '{ s -= $1; n++ } END { printf "%.6f", s / n }' "$d/test_lp.csv")
    echo "  learn: $name: test NLL $nll nats, true entropy $ent nats (gap must be < $margin)"
    if ln_below "$nll" "$ent" "$margin"; then pass; else fail "$NFC: learn: $name: test NLL $nll is not within $margin nats of the true entropy $ent"; fi
}

ln_gap 8gaussians tests/learn/8gaussians.flow 8gaussians 20000 0.1 --steps 10000 --batch 256 --lr 5e-3 --seed 1
ln_gap gmm8 tests/learn/gmm8.flow "gmm --dim 8" 50000 0.5 --steps 2000 --batch 256 --lr 5e-3 --seed 1

# moons: train, sample, and score the samples with the true density and the distance to the arcs
ln_moons() {
    local d="$ln_dir/moons"
    mkdir -p "$d"
    if ! "$NFC" data moons -n 20000 --seed 1 -o "$d/train.npy" 2>"$d/err" ||
       ! "$NFC" data moons -n 5000 --seed 2 -o "$d/test.csv" --log-density "$d/test_lp.csv" 2>"$d/err"; then
        cat "$d/err"; fail "$NFC: learn: moons: nfc data failed"; return
    fi
    if ! "$NFC" train examples/moons.flow --data "$d/train.npy" --steps 3000 --batch 256 --lr 2e-3 --seed 1 -o "$d/w.st" >"$d/log" 2>&1 ||
       ! "$NFC" sample examples/moons.flow --weights "$d/w.st" -n 5000 --seed 3 -o "$d/s.csv" >"$d/log" 2>&1 ||
       ! "$NFC" data moons --log-density-of "$d/s.csv" -o "$d/s_lp.csv" 2>"$d/log"; then
        tail -5 "$d/log"; fail "$NFC: learn: moons: train, sample or --log-density-of failed"; return
    fi
    local ent slp tent tslp near tnear
    ent=$(awk '{ s -= $1; n++ } END { printf "%.6f", s / n }' "$d/test_lp.csv")
    slp=$(awk '{ s -= $1; n++ } END { printf "%.6f", s / n }' "$d/s_lp.csv")
    # the mean of -log p without the worst 1% (the lowest log-densities, first once sorted)
    # shellcheck disable=SC2016
    local trim='{ a[NR] = $1 } END { k = int(NR * 0.99); s = 0; for (i = NR - k + 1; i <= NR; i++) s -= a[i]; printf "%.6f", s / k }'
    tent=$(sort -g "$d/test_lp.csv" | awk "$trim")
    tslp=$(sort -g "$d/s_lp.csv" | awk "$trim")
    # the arcs (runtime/datasets.c): upper c(t) = (-1, -0.5) + 2 (cos t, sin t), lower
    # c(t) = (1, 0.5) - 2 (cos t, sin t), t in [0, pi]; the distance to an arc is |r - 2| on its
    # side of the centre's horizontal, else the distance to the nearer end
    # shellcheck disable=SC2016
    local arcs='function d1(x, y, cx, cy, up,   r, a, b) {
            if ((up && y >= cy) || (!up && y <= cy)) { r = sqrt((x - cx)^2 + (y - cy)^2); return r > 2 ? r - 2 : 2 - r }
            a = sqrt((x - cx - 2)^2 + (y - cy)^2); b = sqrt((x - cx + 2)^2 + (y - cy)^2); return a < b ? a : b }
        { u = d1($1, $2, -1, -0.5, 1); l = d1($1, $2, 1, 0.5, 0); if ((u < l ? u : l) < 0.3) k++; n++ }
        END { printf "%.4f", k / n }'
    near=$(awk -F, "$arcs" "$d/s.csv")
    tnear=$(awk -F, "$arcs" "$d/test.csv")
    echo "  learn: moons: samples: mean -log p_true $slp nats (true entropy $ent), without the worst 1% $tslp (held-out data $tent), fraction within 0.3 of the arcs $near (true data $tnear)"
    if ln_close "$tslp" "$tent" 0.15; then pass; else fail "$NFC: learn: moons: the samples' mean -log p_true without the worst 1%, $tslp, is not within 0.15 nats of the held-out data's, $tent"; fi
    if awk -v f="$near" 'BEGIN { exit !(f >= 0.95) }'; then pass; else fail "$NFC: learn: moons: only $near of the samples lie within 0.3 of the arcs"; fi
    # the check itself: the true data pass it
    if awk -v f="$tnear" 'BEGIN { exit !(f >= 0.95) }'; then pass; else fail "$NFC: learn: moons: the arc-distance check rejects the true data ($tnear)"; fi
}
ln_moons

rm -rf "$ln_dir"
;;
esac

# tests/train.sh: command-line cases of `nfc train`, sourced by tests/run after tests/cli.sh
# (which defines expect) with $NFC set and the helpers pass/fail defined. The runs use the
# reference interpreter and tiny models, so they take seconds even under ASan.
# Cases: usage errors (exit 2); bad data and bad checkpoints (exit 1, file named); a run,
# its checkpoint read by eval --weights; --threads 1 and 3 byte-identical; a run killed with
# SIGKILL at a random moment leaves a loadable checkpoint, and resuming it ends byte-identical
# to an uninterrupted run; the NaN guard; conditional flows.

tr_dir=$(mktemp -d /tmp/nfc_train_cli.XXXXXX)

# 2-D data: two noisy arcs (awk, fixed seed)
awk 'BEGIN { srand(1); pi = 3.141592653589793
  for (i = 0; i < 400; i++) { t = rand() * pi; n1 = rand() + rand() + rand() - 1.5; n2 = rand() + rand() + rand() - 1.5
    if (i % 2) { x = cos(t); y = sin(t) } else { x = 1 - cos(t); y = 0.5 - sin(t) }
    printf "%.6f,%.6f\n", x + 0.1 * n1, y + 0.1 * n2 } }' > "$tr_dir/x.csv"
head -n 60 "$tr_dir/x.csv" > "$tr_dir/v.csv"
awk -F, '{ print $1 "," $2 "," $1 }' "$tr_dir/x.csv" > "$tr_dir/x3.csv"
awk '{ print NR % 2 ",0" }' "$tr_dir/x.csv" > "$tr_dir/c.csv"
# values in (0, 1) for a logit flow, with one row outside
awk 'BEGIN { srand(2); for (i = 0; i < 200; i++) printf "%.6f,%.6f\n", 0.05 + 0.9 * rand(), (i == 150 ? 1.5 : 0.05 + 0.9 * rand()) }' > "$tr_dir/unit.csv"
head -n 100 "$tr_dir/unit.csv" > "$tr_dir/unit_good.csv"
cat > "$tr_dir/tiny.flow" <<'EOF'
flow tiny {
  input x: f32[2]
  base normal
  actnorm
  affine_coupling mask=alternate net=mlp(16)
  reverse
  affine_coupling mask=alternate net=mlp(16)
}
EOF
cat > "$tr_dir/k.flow" <<'EOF'
flow k {
  input x: f32[2]
  base normal
  actnorm
  repeat 3 { affine_coupling mask=alternate net=mlp(32, 32); reverse }
}
EOF
cat > "$tr_dir/lg.flow" <<'EOF'
flow lg {
  input x: f32[2]
  base normal
  logit
  affine_coupling mask=alternate net=mlp(8)
}
EOF

tr_tiny="$tr_dir/tiny.flow"
tr_I=(--backend interp)
tr_x="$tr_dir/x.csv"

# usage errors
expect 2 "train: no model" "missing the model" "$NFC" train
expect 2 "train: no data" "missing --data" "$NFC" train "$tr_tiny" -o "$tr_dir/a.st"
expect 2 "train: no -o" "missing -o" "$NFC" train "$tr_tiny" --data "$tr_x"
expect 2 "train: epochs and steps" "not both" "$NFC" train "$tr_tiny" --data "$tr_x" --epochs 2 --steps 3 -o "$tr_dir/a.st"
expect 2 "train: bad lr" "--lr takes a number > 0" "$NFC" train "$tr_tiny" --data "$tr_x" --lr -1 -o "$tr_dir/a.st"
expect 2 "train: bad batch" "--batch takes" "$NFC" train "$tr_tiny" --data "$tr_x" --batch 0 -o "$tr_dir/a.st"
expect 2 "train: bad threads" "--threads takes" "$NFC" train "$tr_tiny" --data "$tr_x" --threads x -o "$tr_dir/a.st"
expect 2 "train: bad --recompute" "--recompute is inverse or none, not 'stored'" "$NFC" train "$tr_tiny" --data "$tr_x" --recompute=stored -o "$tr_dir/a.st"
expect 0 "train --help mentions --recompute" "--recompute=inverse" "$NFC" train --help
expect 2 "train: unknown option" "unknown option '--frobnicate'" "$NFC" train "$tr_tiny" --data "$tr_x" --frobnicate -o "$tr_dir/a.st"
expect 2 "train: option without value" "needs a value" "$NFC" train "$tr_tiny" --data "$tr_x" -o
expect 2 "train: resume and weights" "not both" "$NFC" train "$tr_tiny" --data "$tr_x" --resume a --weights b -o "$tr_dir/a.st"
expect 2 "train: valid-context without valid" "goes with --valid" "$NFC" train "$tr_tiny" --data "$tr_x" --valid-context c -o "$tr_dir/a.st"

# bad input
expect 1 "train: missing data file" "nope.csv" "$NFC" train "$tr_tiny" "${tr_I[@]}" --data "$tr_dir/nope.csv" -o "$tr_dir/a.st"
expect 1 "train: wrong columns" "x3.csv: expected 2 columns" "$NFC" train "$tr_tiny" "${tr_I[@]}" --data "$tr_dir/x3.csv" -o "$tr_dir/a.st"
expect 1 "train: wrong columns in --valid" "x3.csv: expected 2 columns" "$NFC" train "$tr_tiny" "${tr_I[@]}" --data "$tr_x" --valid "$tr_dir/x3.csv" -o "$tr_dir/a.st"
expect 1 "train: missing model" "nope.flow" "$NFC" train "$tr_dir/nope.flow" --data "$tr_x" -o "$tr_dir/a.st"
expect 1 "train: output directory missing" "cannot write the checkpoint" "$NFC" train "$tr_tiny" "${tr_I[@]}" --data "$tr_x" -o "$tr_dir/no/dir/a.st"
expect 1 "train: context for a flow without one" "has no context input" "$NFC" train "$tr_tiny" "${tr_I[@]}" --data "$tr_x" --context "$tr_dir/c.csv" -o "$tr_dir/a.st"
expect 1 "train: conditional flow without context" "give it for .* with --context" "$NFC" train examples/cmoons.flow "${tr_I[@]}" --data "$tr_x" -o "$tr_dir/a.st"

# a run; its checkpoint is a weights file for the other commands
expect 0 "train: a short run" "validation NLL .* bits/dim" "$NFC" train "$tr_tiny" "${tr_I[@]}" --data "$tr_x" --steps 20 --batch 50 -o "$tr_dir/a.st"
expect 0 "train: plain progress lines" "^epoch 1/3  step 7/20  train loss" "$NFC" train "$tr_tiny" "${tr_I[@]}" --data "$tr_x" --steps 20 --batch 50 -o "$tr_dir/a.st"
expect 0 "train: eval --weights CHECKPOINT" "bits per dimension" "$NFC" eval "$tr_tiny" "${tr_I[@]}" --weights "$tr_dir/a.st" --data "$tr_x"
expect 0 "train: --weights CHECKPOINT starts a new run" "step 5/5" "$NFC" train "$tr_tiny" "${tr_I[@]}" --data "$tr_x" --steps 5 --weights "$tr_dir/a.st" -o "$tr_dir/b.st"
expect 0 "train: --valid file" "validation NLL" "$NFC" train "$tr_tiny" "${tr_I[@]}" --data "$tr_x" --valid "$tr_dir/v.csv" --epochs 2 --batch 100 -o "$tr_dir/b.st"
expect 0 "train: no validation" "no validation" "$NFC" train "$tr_tiny" "${tr_I[@]}" --data "$tr_x" --valid-fraction 0 --steps 3 -o "$tr_dir/b.st"
expect 0 "train: conditional flow" "validation NLL" "$NFC" train examples/cmoons.flow "${tr_I[@]}" --data "$tr_x" --context "$tr_dir/c.csv" --steps 2 --batch 64 -o "$tr_dir/c.st"

# the thread count does not change the result
"$NFC" train "$tr_tiny" "${tr_I[@]}" --data "$tr_x" --steps 6 --batch 150 --threads 1 -o "$tr_dir/t1.st" >/dev/null 2>&1
"$NFC" train "$tr_tiny" "${tr_I[@]}" --data "$tr_x" --steps 6 --batch 150 --threads 3 -o "$tr_dir/t3.st" >/dev/null 2>&1
if cmp -s "$tr_dir/t1.st" "$tr_dir/t3.st"; then pass; else fail "$NFC: cli: train: --threads 1 and 3 give different checkpoints"; fi

# bad checkpoints for --resume
expect 1 "train: resume with another seed" "seed 0, not 5" "$NFC" train "$tr_tiny" "${tr_I[@]}" --data "$tr_x" --steps 20 --batch 50 --seed 5 --resume "$tr_dir/a.st" -o "$tr_dir/b.st"
expect 1 "train: resume with another batch" "batch size 50, not 40" "$NFC" train "$tr_tiny" "${tr_I[@]}" --data "$tr_x" --steps 20 --batch 40 --resume "$tr_dir/a.st" -o "$tr_dir/b.st"
expect 1 "train: resume another model's checkpoint" "different model" "$NFC" train "$tr_dir/k.flow" "${tr_I[@]}" --data "$tr_x" --steps 20 --batch 50 --resume "$tr_dir/a.st" -o "$tr_dir/b.st"
expect 1 "train: resume with other --steps" "total of 20 steps, not 30" "$NFC" train "$tr_tiny" "${tr_I[@]}" --data "$tr_x" --steps 30 --batch 50 --resume "$tr_dir/a.st" -o "$tr_dir/b.st"
expect 1 "train: resume a missing file" "nope.st" "$NFC" train "$tr_tiny" "${tr_I[@]}" --data "$tr_x" --resume "$tr_dir/nope.st" -o "$tr_dir/b.st"
tr_size=$(wc -c < "$tr_dir/a.st")
for tr_cut in 0 7 8 20 100 $((tr_size / 2)) $((tr_size - 1)); do
    head -c "$tr_cut" "$tr_dir/a.st" > "$tr_dir/cut.st"
    expect 1 "train: resume a checkpoint truncated at $tr_cut bytes" "cut.st" "$NFC" train "$tr_tiny" "${tr_I[@]}" --data "$tr_x" --steps 20 --batch 50 --resume "$tr_dir/cut.st" -o "$tr_dir/b.st"
done
LC_ALL=C sed 's/"nfc.step":"20"/"nfc.step":"2x"/' "$tr_dir/a.st" > "$tr_dir/corrupt.st"
expect 1 "train: resume a checkpoint with a corrupt header" "corrupt.st: corrupt checkpoint" "$NFC" train "$tr_tiny" "${tr_I[@]}" --data "$tr_x" --steps 20 --batch 50 --resume "$tr_dir/corrupt.st" -o "$tr_dir/b.st"

# the NaN guard: a row outside the domain of logit; the last good checkpoint stays
rm -f "$tr_dir/nan.st"
expect 1 "train: non-finite loss stops with the layer" "non-finite loss at step [0-9]* (epoch 1): first non-finite value in layer 1 (logit)" \
    "$NFC" train "$tr_dir/lg.flow" "${tr_I[@]}" --data "$tr_dir/unit.csv" --batch 20 --steps 40 --save-every 1 -o "$tr_dir/nan.st"
expect 0 "train: the last good checkpoint is loadable" "bits per dimension" "$NFC" eval "$tr_dir/lg.flow" "${tr_I[@]}" --weights "$tr_dir/nan.st" --data "$tr_dir/unit_good.csv"

# killed at a random moment: the checkpoint on disk is always loadable, and resuming (with
# another thread count) ends byte-identical to the uninterrupted run
tr_k="$tr_dir/k.flow"
tr_args=("${tr_I[@]}" --data "$tr_x" --steps 200 --batch 64 --seed 3 --save-every 10)
tr_t0=$(date +%s%N)
"$NFC" train "$tr_k" "${tr_args[@]}" --threads 1 -o "$tr_dir/full.st" >/dev/null 2>&1
tr_ms=$((($(date +%s%N) - tr_t0) / 1000000))
for _ in 1 2 3; do
    rm -f "$tr_dir/kill.st"
    "$NFC" train "$tr_k" "${tr_args[@]}" -o "$tr_dir/kill.st" >/dev/null 2>&1 &
    tr_pid=$!
    tr_delay=$((tr_ms * (10 + RANDOM % 80) / 100))
    sleep "$(printf '%d.%03d' $((tr_delay / 1000)) $((tr_delay % 1000)))"
    kill -9 "$tr_pid" 2>/dev/null
    wait "$tr_pid" 2>/dev/null
    if [ -f "$tr_dir/kill.st" ]; then
        expect 0 "train: killed after ${tr_delay} ms: the checkpoint loads" "bits per dimension" "$NFC" eval "$tr_k" "${tr_I[@]}" --weights "$tr_dir/kill.st" --data "$tr_x"
        expect 0 "train: killed after ${tr_delay} ms: resume" "step 200/200" "$NFC" train "$tr_k" "${tr_args[@]}" --threads 2 --resume "$tr_dir/kill.st" -o "$tr_dir/kill.st"
    else
        expect 0 "train: killed after ${tr_delay} ms before the first checkpoint: start again" "step 200/200" "$NFC" train "$tr_k" "${tr_args[@]}" -o "$tr_dir/kill.st"
    fi
    if cmp -s "$tr_dir/full.st" "$tr_dir/kill.st"; then pass; else fail "$NFC: cli: train: killed after ${tr_delay} ms and resumed: the checkpoint differs from an uninterrupted run"; fi
done

# with a working JIT: the native code trains too, and the threads do not change the result
if "$NFC" logprob "$tr_tiny" --data "$tr_x" -o "$tr_dir/lp.npy" >/dev/null 2>&1; then
    expect 0 "train: JIT" "validation NLL" "$NFC" train "$tr_tiny" --data "$tr_x" --steps 10 --batch 150 --threads 1 -o "$tr_dir/j1.st"
    "$NFC" train "$tr_tiny" --data "$tr_x" --steps 10 --batch 150 --threads 3 -o "$tr_dir/j3.st" >/dev/null 2>&1
    if cmp -s "$tr_dir/j1.st" "$tr_dir/j3.st"; then pass; else fail "$NFC: cli: train: JIT: --threads 1 and 3 give different checkpoints"; fi
    # --recompute=inverse: the same training in f64 to rounding (the gradients agree to ~1e-16),
    # and still independent of the thread count
    for tr_r in none inverse; do
        "$NFC" train "$tr_dir/k.flow" --dtype f64 --data "$tr_x" --steps 10 --batch 150 --threads 1 --recompute=$tr_r -o "$tr_dir/r_$tr_r.st" >/dev/null 2>&1
        "$NFC" logprob "$tr_dir/k.flow" --dtype f64 --weights "$tr_dir/r_$tr_r.st" --data "$tr_x" -o "$tr_dir/r_$tr_r.csv" >/dev/null 2>&1
    done
    expect 0 "train --recompute=inverse: the same model as without" "^same 400$" sh -c "paste -d, '$tr_dir/r_none.csv' '$tr_dir/r_inverse.csv' | awk -F, '{ d = \$1 - \$2; if (d < 0) d = -d; s = \$2 < 0 ? -\$2 : \$2; if (s < 1) s = 1; if (d <= 1e-9 * s) k++ } END { print \"same\", k }'"
    "$NFC" train "$tr_dir/k.flow" --data "$tr_x" --steps 6 --batch 150 --threads 3 --recompute inverse -o "$tr_dir/r3.st" >/dev/null 2>&1
    "$NFC" train "$tr_dir/k.flow" --data "$tr_x" --steps 6 --batch 150 --threads 1 --recompute=inverse -o "$tr_dir/r1.st" >/dev/null 2>&1
    if cmp -s "$tr_dir/r1.st" "$tr_dir/r3.st"; then pass; else fail "$NFC: cli: train --recompute=inverse: --threads 1 and 3 give different checkpoints"; fi
fi

rm -rf "$tr_dir"

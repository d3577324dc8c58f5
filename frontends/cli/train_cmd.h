/* frontends/cli/train_cmd.h: `nfc train` (train_cmd.c). */
#ifndef NFC_TRAIN_CMD_H
#define NFC_TRAIN_CMD_H
/* argv: the arguments after the word "train". Returns the exit status: 0, 1 bad input, 2 usage. */
int cmd_train(int argc, char **argv, int color);
/* The lines of `nfc --help` that describe `nfc train`: a string literal, to be pasted into
 * main.c's usage text after the other commands. */
#define NFC_TRAIN_USAGE \
    "  train MODEL --data X -o W.safetensors [options]   fit the model by maximum likelihood;\n" \
    "                         the checkpoint is also a weights file (--weights)\n" \
    "    --valid V            validation data (default: hold out --valid-fraction of X)\n" \
    "    --valid-fraction F   default 0.1; 0: no validation\n" \
    "    --context C, --valid-context VC   contexts of X and V (conditional flows)\n" \
    "    --epochs E | --steps S   default 20 epochs; --steps counts from the start\n" \
    "    --batch B (256)  --lr LR (1e-3)  --weight-decay WD (0)  --clip NORM (10; 0: off)\n" \
    "    --warmup N (100 steps, then cosine decay to lr/20)  --seed S (0)\n" \
    "    --threads T          default: the online CPUs; the result does not depend on T\n" \
    "    --save-every N       also write the checkpoint every N steps\n" \
    "    --resume CKPT        continue a run from its checkpoint (same settings)\n" \
    "    --weights W          start a new run from these parameters\n" \
    "    --no-fuse            compile without fusion (like -O, --dtype, --cpu: see below)\n" \
    "    --recompute=inverse  the backward pass rebuilds each layer's input from its output\n" \
    "                         with the layer's inverse instead of keeping the forward values\n" \
    "                         (memory flat in depth, ~1 more net evaluation per step);\n" \
    "                         --recompute=none (default) keeps them\n"
#endif

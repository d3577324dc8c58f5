/* frontends/cli/data_cmd.h: `nfc data` (data_cmd.c), samples of the toy data sets
 * (runtime/datasets.h) with their exact log-density. */
#ifndef NFC_DATA_CMD_H
#define NFC_DATA_CMD_H
/* argv: the arguments after the word "data". Returns the exit status: 0, 1 bad input (a file
 * that cannot be written, memory), 2 usage. */
int cmd_data(int argc, char **argv);
/* The lines of `nfc --help` that describe `nfc data`: a string literal, to be pasted into
 * main.c's usage text after the other commands. */
#define NFC_DATA_USAGE \
    "  data NAME -n N -o X [--seed S] [--dim D] [--log-density LP]   samples of a toy data\n" \
    "                         set (f64, NPY or CSV by extension); NAME is moons, circles,\n" \
    "                         8gaussians, pinwheel, 2spirals, checkerboard or gmm\n" \
    "    -n N                 number of samples, 1..10^8 (required)\n" \
    "    --seed S             default 0; sample i depends only on (S, i)\n" \
    "    --dim D              dimension of gmm, 2..1024 (default 8)\n" \
    "    --log-density LP     also write each sample's exact log-density (nats), [N, 1]\n" \
    "  data NAME --log-density-of X -o LP [--dim D]   the exact log-density of the data set\n" \
    "                         at the points of X (e.g. a model's samples), [N, 1]\n"
#endif

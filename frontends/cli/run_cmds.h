/* frontends/cli/run_cmds.h: the commands that run models (run_cmds.c). */
#ifndef NFC_RUN_CMDS_H
#define NFC_RUN_CMDS_H
int cmd_run(const char *cmd, int argc, char **argv, int color);
int cmd_emit(int argc, char **argv, int color);

#define NFC_AOT_USAGE \
    "  MODEL.flow -o OUT [options]                ahead-of-time build: a shared library\n" \
    "                         with its C header OUT-stem.h (NAME_log_prob, NAME_forward,\n" \
    "                         NAME_inverse, NAME_sample, NAME_workspace_size; NAME is the\n" \
    "                         flow's name); depends on libc, libm and libsleef only\n" \
    "    --weights W          embed these trained weights (also --embed: embed the\n" \
    "                         initializer's); otherwise the library exports\n" \
    "                         NAME_load_weights and NAME_load_weights_file\n" \
    "    --emit=so|obj|header|asm|llvm   what to write (default: by OUT's extension,\n" \
    "                         .o .h .s .ll, else so); -c is --emit=obj\n" \
    "    --header H           where the header goes (default: beside OUT, for so and obj)\n" \
    "    --name NAME          symbol prefix (default: the flow's name)\n" \
    "    --target TRIPLE      e.g. aarch64-linux-gnu (default: this machine)\n" \
    "    --cpu NAME           e.g. generic, x86-64-v3 (default: this machine's CPU, or\n" \
    "                         generic for another architecture)\n" \
    "    --no-sleef           nfc's own vector math: no libsleef at run time\n" \
    "    --no-fuse            no fusion of elementwise chains and product epilogues\n" \
    "    --cc CC              linker driver for so (default: $NFC_CC, cc, or\n" \
    "                         <arch>-linux-gnu-gcc for --target)\n"
#endif

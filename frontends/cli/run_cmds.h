/* frontends/cli/run_cmds.h: the commands that run models (run_cmds.c). */
#ifndef NFC_RUN_CMDS_H
#define NFC_RUN_CMDS_H
int cmd_run(const char *cmd, int argc, char **argv, int color);
int cmd_emit(int argc, char **argv, int color);
#endif

/* compiler/front.h: the front of the pipeline in one call: read a .flow file (or take a
 * string), lex, parse and analyse it. Input: a path or text. Output: flow graphs and the
 * diagnostics, both in the caller's arena and diag_ctx. Library code: never prints or exits. */
#ifndef NFC_FRONT_H
#define NFC_FRONT_H
#include "sema.h"

#define NFC_MAX_SOURCE_BYTES (16u << 20)

/* Returns the number of errors (0 on success). A file that cannot be read is one error
 * without a line ("model.flow: cannot open: No such file or directory"). */
int front_compile_file(diag_ctx *dc, const char *path, sema_result *out, ast **tree);
int front_compile_text(diag_ctx *dc, const char *name, const char *text, size_t len, sema_result *out, ast **tree);

#endif

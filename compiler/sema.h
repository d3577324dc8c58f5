/* compiler/sema.h: semantic analysis, from the syntax tree of a file to one flow graph per
 * `flow`. Reports located errors (unknown names with did-you-mean, shape mismatches,
 * non-invertible graphs) to the diag_ctx and returns the graphs it could build. */
#ifndef NFC_SEMA_H
#define NFC_SEMA_H
#include "../frontends/flow/ast.h"
#include "ir.h"

typedef struct {
    ir_graph **flows;
    int        nflows, cap;
} sema_result;

/* Analyse every flow of `file`. A flow with errors is not returned. */
void sema_file(diag_ctx *dc, ast *file, sema_result *out);

#endif

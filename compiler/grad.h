/* compiler/grad.h: reverse-mode differentiation of the tensor IR.
 * grad_build() makes the training program of a flow:
 *   loss_grad   args: x [D], ctx [C]    outs: lp [1] per row; gradient outputs: for every
 *               parameter, d(-sum_rows lp)/d(param) (the sum over the call's rows; divide by
 *               n for the mean loss)
 * grad_build_inverse() differentiates the inverse pass (sampling-based objectives,
 * e.g. reverse KL, need it):
 *   inverse_grad  args: z [D], ctx [C], w [D]    outs: x [D], logdet [1], s [1] per row with
 *               x = f^-1(z), logdet = log|det df^-1/dz|, s = sum_j w_j x_j + logdet;
 *               gradient outputs: for every parameter, d(sum_rows s)/d(param)
 * (ctx only when the flow has a context; w is then args[2], else args[1].)
 * One vector-Jacobian rule per op, in one switch in grad.c. */
#ifndef NFC_GRAD_H
#define NFC_GRAD_H
#include "tir.h"

int grad_build(const ir_graph *g, arena *ar, tprog **out, char *err, size_t errlen);
/* The same program (loss_grad, same arguments, outputs and gradients) with the backward pass
 * rebuilding each layer's input from its output by the layer's inverse instead of keeping
 * the forward activations (derive_grad_recompute_into, docs/training.md "Memory"). */
int grad_build_recompute(const ir_graph *g, arena *ar, tprog **out, char *err, size_t errlen);
int grad_build_inverse(const ir_graph *g, arena *ar, tprog **out, char *err, size_t errlen);
/* Differentiate the first nf nodes of p: adjoint seed for value `of` is `seed`; appends the
 * backward nodes and a gradient output per parameter. Exposed for tests. */
int grad_append(tprog *p, const ir_graph *g, tref of, tref seed, char *err, size_t errlen);

/* Incremental reverse mode, for a backward pass built piece by piece (derive.c's recompute):
 * grad_seed adds g to the adjoint of v; grad_range applies the vector-Jacobian rules to the
 * nodes in [lo, hi) that have an adjoint, last first (their operands outside the range
 * receive adjoints but are not differentiated further); grad_take returns v's adjoint (-1 if
 * none) and clears it; grad_end appends a gradient output per parameter (the sum over every
 * PARAM node that received an adjoint) and frees the context (grad_abort frees it only).
 * Functions returning int return 0, or -1 with a message in err. */
typedef struct grad_ctx grad_ctx;
grad_ctx *grad_begin(tprog *p, char *err, size_t errlen);
int       grad_seed(grad_ctx *c, tref v, tref g);
int       grad_range(grad_ctx *c, int lo, int hi);
tref      grad_take(grad_ctx *c, tref v);
int       grad_end(grad_ctx *c, const ir_graph *g);
void      grad_abort(grad_ctx *c);

#endif

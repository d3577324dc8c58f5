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
int grad_build_inverse(const ir_graph *g, arena *ar, tprog **out, char *err, size_t errlen);
/* Differentiate the first nf nodes of p: adjoint seed for value `of` is `seed`; appends the
 * backward nodes and a gradient output per parameter. Exposed for tests. */
int grad_append(tprog *p, const ir_graph *g, tref of, tref seed, char *err, size_t errlen);

#endif

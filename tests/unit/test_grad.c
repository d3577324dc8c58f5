/* tests/unit/test_grad.c: reverse-mode gradients, checked against central differences in
 * f64 through the interpreter, for every example and for flows covering every primitive,
 * conditioner activation and base distribution, with random non-trivial parameters.
 * For each parameter tensor, several entries are perturbed by +-h and the loss is recomputed
 * with the derived programs; the analytic gradient must agree to 1e-6 relative. Two losses:
 *   density  L = -sum_rows log p(x)                          (grad_build, log_prob)
 *   inverse  L = sum_rows (sum_j w_j x_j + log|det df^-1/dz|),  x = f^-1(z)
 *            (grad_build_inverse, inverse: through LU_INV and the loops of MAF inverses) */
#include "t.h"

#include <math.h>
#include <stdlib.h>

#include "derive.h"
#include "front.h"
#include "grad.h"
#include "init.h"
#include "interp.h"

enum { DENSITY, INVERSE, RECOMPUTE };

static void check_grad_mode(int mode, const char *name, const char *path, const char *text, int unit_domain) {
    arena ar;
    arena_init(&ar);
    diag_ctx dc;
    diag_init(&dc, &ar);
    sema_result res = { 0 };
    int nerr = path ? front_compile_file(&dc, path, &res, NULL) : front_compile_text(&dc, "t.flow", text, strlen(text), &res, NULL);
    CHECK(nerr == 0 && res.nflows == 1, "%s does not compile", name);
    if (nerr) { diag_render(&dc, stdout, 0); arena_free(&ar); return; }
    ir_graph *g = res.flows[0];
    char err[256];
    tprog *gp = NULL;
    derived dv;
    CHECK(derive_all(g, &ar, &dv, err, sizeof err) == 0, "%s", err);
    int rc = mode == INVERSE     ? grad_build_inverse(g, &ar, &gp, err, sizeof err)
             : mode == RECOMPUTE ? grad_build_recompute(g, &ar, &gp, err, sizeof err)
                                 : grad_build(g, &ar, &gp, err, sizeof err);
    CHECK(rc == 0, "%s: %s", name, err);
    if (rc) { arena_free(&ar); return; }
    int64_t *off = arena_alloc(&ar, sizeof(int64_t) * (size_t)(g->np + 1));
    int64_t total = tir_param_offsets(g, off);
    double *params = arena_alloc(&ar, sizeof(double) * (size_t)total);
    init_params(g, params, 5, 0.4);
    int D = g->nodes[g->input].width, C = g->context != IR_NONE ? g->nodes[g->context].width : 0;
    enum { N = 5 };
    double x[N * 64], ctx[N * 8], wv[N * 64], lp[N], grad[1 << 17];
    CHECK(D <= 64 && C <= 8 && total <= (1 << 17), "test buffers too small");
    uint64_t s = 77;
    for (int i = 0; i < N * D; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u = (double)(s >> 11) * 0x1p-53;
        x[i] = unit_domain ? 0.05 + 0.9 * u : 3 * u - 1.5;
        wv[i] = 2 * u - 1 + 0.5 * ((i * 7) % 5 - 2);
    }
    for (int i = 0; i < N * C; i++) ctx[i] = (i % 3) ? 0.5 : -1.0;
    const double *args[3] = { x, C ? ctx : wv, wv };
    double one = 1;
    /* the program computing the loss without gradients, and the loss from its outputs */
    tprog *lossp = dv.p[mode == INVERSE ? PROG_INVERSE : PROG_LOG_PROB];
    double xo[N * 64], ld[N], xo2[N * 64], ld2[N], lp2[N];
    double *outs2[2] = { mode == INVERSE ? xo2 : lp2, ld2 };
#define LOSS(Lvar) do { \
        interp_run(lossp, N, 0, 0, args, &one, outs2, params, off, err, sizeof err); \
        Lvar = 0; \
        for (int r = 0; r < N; r++) { \
            if (mode == INVERSE) { Lvar += ld2[r]; for (int j = 0; j < D; j++) Lvar += wv[r * D + j] * xo2[r * D + j]; } \
            else Lvar -= lp2[r]; \
        } } while (0)
    if (mode == INVERSE) {
        double *outs[4] = { xo, ld, lp, grad };
        CHECK(interp_run(gp, N, 0, 0, args, &one, outs, params, off, err, sizeof err) == 0, "%s", err);
        /* the gradient program's x, logdet and s agree with the inverse program's */
        double L0;
        LOSS(L0);
        double ssum = 0;
        for (int r = 0; r < N; r++) {
            CHECK_NEAR(ld[r], ld2[r], 1e-12 * (1 + fabs(ld[r])));
            double sr = ld2[r];
            for (int j = 0; j < D; j++) {
                CHECK_NEAR(xo[r * D + j], xo2[r * D + j], 1e-12 * (1 + fabs(xo[r * D + j])));
                sr += wv[r * D + j] * xo2[r * D + j];
            }
            CHECK_NEAR(lp[r], sr, 1e-12 * (1 + fabs(sr)));
            ssum += lp[r];
        }
        CHECK_NEAR(ssum, L0, 1e-12 * (1 + fabs(L0)));
    } else {
        double *outs[2] = { lp, grad };
        CHECK(interp_run(gp, N, 0, 0, args, &one, outs, params, off, err, sizeof err) == 0, "%s", err);
        /* the loss program's lp equals log_prob's */
        double L0;
        LOSS(L0);
        (void)L0;
        for (int r = 0; r < N; r++) CHECK_NEAR(lp[r], lp2[r], 1e-12 * (1 + fabs(lp[r])));
        if (mode == RECOMPUTE) {
            /* the same gradient as the program that keeps the forward pass's values, up to
             * the rounding of the rebuilt inputs */
            tprog *sp = NULL;
            CHECK(grad_build(g, &ar, &sp, err, sizeof err) == 0, "%s", err);
            double *g2 = arena_alloc(&ar, sizeof(double) * (size_t)total), lp3[N];
            double *o2[2] = { lp3, g2 };
            CHECK(sp && interp_run(sp, N, 0, 0, args, &one, o2, params, off, err, sizeof err) == 0, "%s", err);
            int differ = 0;
            for (int64_t e = 0; e < total; e++)
                if (!(fabs(grad[e] - g2[e]) <= 1e-9 * (1 + fabs(g2[e])))) {
                    if (differ++ < 3) printf("    %s: gradient entry %lld: recomputed %.15g, stored %.15g\n", name, (long long)e, grad[e], g2[e]);
                }
            CHECK(differ == 0, "%s: %d of %lld gradient entries differ from the stored pass's", name, differ, (long long)total);
        }
    }
    /* central differences on sampled entries of every parameter tensor */
    int checked = 0, bad = 0;
    double worst = 0;
    for (int p = 0; p < g->np; p++) {
        int64_t numel = ir_param_numel(&g->params[p]);
        int samples = numel < 4 ? (int)numel : 4;
        for (int k = 0; k < samples; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            int64_t e = off[p] + (int64_t)((s >> 20) % (uint64_t)numel);
            double keep = params[e], h = 1e-5 * fmax(1.0, fabs(keep));
            /* L(+h) - L(-h) as a sum of differences of the outputs, not a difference of two
             * sums: the sums are large (inverse log-dets of wide flows), their rounding would
             * be magnified by 1/(2h) */
            double xs[2][N * 64], lds[2][N];
            for (int side = 0; side < 2; side++) {
                params[e] = keep + (side ? -h : h);
                double *o[2] = { xs[side], lds[side] };
                interp_run(lossp, N, 0, 0, args, &one, o, params, off, err, sizeof err);
            }
            params[e] = keep;
            double dL = 0;
            for (int r = 0; r < N; r++) {
                if (mode == INVERSE) {
                    double dr = lds[0][r] - lds[1][r];
                    for (int j = 0; j < D; j++) dr += wv[r * D + j] * (xs[0][r * D + j] - xs[1][r * D + j]);
                    dL += dr;
                } else {
                    dL -= xs[0][r] - xs[1][r];
                }
            }
            double fd = dL / (2 * h), an = grad[e];
            double rel = fabs(fd - an) / fmax(fmax(fabs(fd), fabs(an)), 1e-3);
            if (rel > worst) worst = rel;
            if (rel > 1e-6) {
                if (bad < 5) printf("    %s (%s): %s[%lld]: analytic %.12g, central difference %.12g\n", name, mode == INVERSE ? "inverse" : mode == RECOMPUTE ? "recompute" : "density", g->params[p].name,
                                    (long long)(e - off[p]), an, fd);
                bad++;
            }
            checked++;
        }
    }
    CHECK(bad == 0, "%s (%s): %d of %d gradient entries differ (worst relative error %g)", name, mode == INVERSE ? "inverse" : mode == RECOMPUTE ? "recompute" : "density", bad, checked, worst);
    CHECK(checked > 0);
#undef LOSS
    arena_free(&ar);
}

static void check_grad(const char *name, const char *path, const char *text, int unit_domain) {
    check_grad_mode(DENSITY, name, path, text, unit_domain);
}

static const char *const examples[][2] = { { "moons", "examples/moons.flow" }, { "maf8", "examples/maf.flow" },
                                           { "glow16", "examples/glow_dense.flow" }, { "cmoons", "examples/cmoons.flow" },
                                           { "custom", "examples/custom.flow" } };
#define NEXAMPLES (sizeof examples / sizeof examples[0])

TEST(examples_gradients) {
    for (size_t k = 0; k < NEXAMPLES; k++) check_grad(examples[k][0], examples[k][1], NULL, 0);
}

static const struct { const char *name, *text; int unit; } density_cases[] = {
    { "affine exp", "flow f { input x: f64[3]\n affine_coupling mask=[0,1,1] net=mlp(8) scaling=exp\n reverse\n affine_coupling net=mlp(8, act=tanh) scaling=exp }", 0 },
    { "affine tanh elu gelu", "flow f { input x: f64[4]\n affine_coupling mask=alternate net=mlp(8, act=elu) clamp=1.5\n permute seed=3\n affine_coupling mask=alternate(1) net=mlp(8, act=gelu) }", 0 },
    { "sigmoid scaling, softplus, sigmoid act", "flow f { input x: f64[4]\n affine_coupling net=mlp(8, act=softplus) scaling=sigmoid\n permute\n affine_coupling net=mlp(8, act=sigmoid) scaling=sigmoid }", 0 },
    { "additive, leaky act", "flow f { input x: f64[5]\n additive_coupling mask=half net=mlp(8, act=leaky_relu)\n reverse\n additive_coupling net=mlp(8) }", 0 },
    { "actnorm + linear lu", "flow f { input x: f64[5]\n actnorm\n linear lu\n actnorm\n linear }", 0 },
    { "leaky_relu", "flow f { input x: f64[3]\n actnorm\n leaky_relu slope=0.2\n linear lu }", 0 },
    { "sigmoid", "flow f { input x: f64[3]\n actnorm\n sigmoid }", 0 },
    { "logit", "flow f { input x: f64[3]\n logit\n actnorm }", 1 },
    { "maf", "flow f { input x: f64[4]\n maf net=made(16, 16) scaling=exp\n reverse\n maf net=made(12, act=tanh) }", 0 },
    { "maf context", "flow f { input x: f64[3]\n context c: f64[2]\n maf net=made(16)\n reverse\n maf net=made(8) scaling=sigmoid }", 0 },
    { "learned base", "flow f { input x: f64[2]\n base normal(learned)\n affine_coupling net=mlp(8) }", 0 },
    { "logistic base", "flow f { input x: f64[2]\n base logistic\n affine_coupling net=mlp(8) }", 0 },
    /* a1 is read by a layer and by a later layer's conditioner: recomputation must not take
     * a1's layer before both have added to its adjoint */
    { "graph: a value read by a layer and a conditioner", "flow f { input x: f64[4]\n a, b = split x [2, 2]\n a1 = actnorm a\n a2 = actnorm a1\n"
      " b2 = additive b shift=mlp(8)(a1)\n z = concat a2, b2\n output z }", 0 },
    { "residual net + context", "net r(h) { dense h tanh; residual { dense h relu; dense h }; dense out }\n" "flow f { input x: f64[4]\n context c: f64[1]\n affine_coupling net=r(8)\n reverse\n additive_coupling net=r(6) }", 0 },
};

TEST(primitive_gradients) {
    for (size_t k = 0; k < sizeof density_cases / sizeof density_cases[0]; k++)
        check_grad(density_cases[k].name, NULL, density_cases[k].text, density_cases[k].unit);
}

/* the training program that rebuilds each layer's input by its inverse (--recompute=inverse):
 * central differences, and equal to the program that keeps the forward values */
TEST(recompute_gradients) {
    for (size_t k = 0; k < NEXAMPLES; k++) check_grad_mode(RECOMPUTE, examples[k][0], examples[k][1], NULL, 0);
    for (size_t k = 0; k < sizeof density_cases / sizeof density_cases[0]; k++)
        check_grad_mode(RECOMPUTE, density_cases[k].name, NULL, density_cases[k].text, density_cases[k].unit);
}

/* gradients of the inverse pass: LU_INV, the MAF loops (unrolled), every other inverse rule */
TEST(examples_inverse_gradients) {
    for (size_t k = 0; k < NEXAMPLES; k++) check_grad_mode(INVERSE, examples[k][0], examples[k][1], NULL, 0);
}

TEST(primitive_inverse_gradients) {
    static const struct { const char *name, *text; int unit; } cases[] = {
        { "affine exp", "flow f { input x: f64[3]\n affine_coupling mask=[0,1,1] net=mlp(8) scaling=exp\n reverse\n affine_coupling net=mlp(8, act=tanh) scaling=exp }", 0 },
        { "affine tanh elu gelu", "flow f { input x: f64[4]\n affine_coupling mask=alternate net=mlp(8, act=elu) clamp=1.5\n permute seed=3\n affine_coupling mask=alternate(1) net=mlp(8, act=gelu) }", 0 },
        { "sigmoid scaling, softplus, sigmoid act", "flow f { input x: f64[4]\n affine_coupling net=mlp(8, act=softplus) scaling=sigmoid\n permute\n affine_coupling net=mlp(8, act=sigmoid) scaling=sigmoid }", 0 },
        { "additive, leaky act", "flow f { input x: f64[5]\n additive_coupling mask=half net=mlp(8, act=leaky_relu)\n reverse\n additive_coupling net=mlp(8) }", 0 },
        { "actnorm + linear lu", "flow f { input x: f64[5]\n actnorm\n linear lu\n actnorm\n linear }", 0 },
        { "linear lu alone", "flow f { input x: f64[4]\n linear lu }", 0 },
        { "leaky_relu", "flow f { input x: f64[3]\n actnorm\n leaky_relu slope=0.2\n linear lu }", 0 },
        { "sigmoid", "flow f { input x: f64[3]\n actnorm\n sigmoid }", 1 },
        { "logit", "flow f { input x: f64[3]\n logit\n actnorm }", 0 },
        { "maf alone", "flow f { input x: f64[3]\n maf net=made(8) }", 0 },
        { "maf", "flow f { input x: f64[4]\n maf net=made(16, 16) scaling=exp\n reverse\n maf net=made(12, act=tanh) }", 0 },
        { "maf context", "flow f { input x: f64[3]\n context c: f64[2]\n maf net=made(16)\n reverse\n maf net=made(8) scaling=sigmoid }", 0 },
        { "maf then lu", "flow f { input x: f64[3]\n maf net=made(8)\n linear lu\n maf net=made(8, act=gelu) }", 0 },
        { "learned base", "flow f { input x: f64[2]\n base normal(learned)\n affine_coupling net=mlp(8) }", 0 },
        { "residual net + context", "net r(h) { dense h tanh; residual { dense h relu; dense h }; dense out }\n"
          "flow f { input x: f64[4]\n context c: f64[1]\n affine_coupling net=r(8)\n reverse\n additive_coupling net=r(6) }", 0 },
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        check_grad_mode(INVERSE, cases[k].name, NULL, cases[k].text, cases[k].unit);
}

int main(void) {
    RUN(examples_gradients);
    RUN(primitive_gradients);
    RUN(examples_inverse_gradients);
    RUN(primitive_inverse_gradients);
    RUN(recompute_gradients);
    return t_done();
}

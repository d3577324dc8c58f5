/* tests/unit/test_derive.c: the derived programs, checked through the f64 interpreter by
 * invariants, for every example and for small flows covering every primitive, with random
 * non-trivial parameters (init_scale > 0):
 *   inverse(forward(x)) = x                      (max abs error <= 1e-10)
 *   logdet = log|det J|, J by central differences (relative 1e-6)
 *   inverse logdet = -forward logdet at the same point
 *   log_prob = log p_base(z) + logdet
 *   2-D models: the density integrates to 1 on a grid (1e-3); samples have its moments */
#include "t.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "derive.h"
#include "front.h"
#include "init.h"
#include "interp.h"

typedef struct {
    arena     ar;
    diag_ctx  dc;
    ir_graph *g;
    derived   dv;
    double   *params;
    int64_t  *off;
    int       D, C;
} model;

static int load(model *m, const char *path, const char *text, double init_scale, uint64_t seed) {
    arena_init(&m->ar);
    diag_init(&m->dc, &m->ar);
    sema_result res = { 0 };
    int nerr = path ? front_compile_file(&m->dc, path, &res, NULL)
                    : front_compile_text(&m->dc, "t.flow", text, strlen(text), &res, NULL);
    if (nerr || res.nflows != 1) {
        diag_render(&m->dc, stdout, 0);
        return 0;
    }
    m->g = res.flows[0];
    char err[256];
    if (derive_all(m->g, &m->ar, &m->dv, err, sizeof err)) {
        printf("    derive: %s\n", err);
        return 0;
    }
    m->off = arena_alloc(&m->ar, sizeof(int64_t) * (size_t)(m->g->np + 1));
    int64_t total = tir_param_offsets(m->g, m->off);
    m->params = arena_alloc(&m->ar, sizeof(double) * (size_t)(total + 1));
    init_params(m->g, m->params, seed, init_scale);
    m->D = m->g->nodes[m->g->input].width;
    m->C = m->g->context != IR_NONE ? m->g->nodes[m->g->context].width : 0;
    return 1;
}

static void unload(model *m) { arena_free(&m->ar); }

static void run(model *m, int prog, int64_t n, const double *a0, const double *a1, double *o0, double *o1) {
    const double *args[2] = { a0, a1 };
    double *outs[2] = { o0, o1 };
    double temp = 1.0;
    char err[256];
    int rc = interp_run(m->dv.p[prog], n, 0, 42, args, &temp, outs, m->params, m->off, err, sizeof err);
    CHECK(rc == 0, "%s", err);
}

static double urand(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return ((double)(*s >> 11) * 0x1p-53);
}

/* inputs in the domain of the flow: (0,1) for flows that start with logit, else normal-ish */
static void make_inputs(double *x, int64_t n, int D, int unit, uint64_t *s) {
    for (int64_t i = 0; i < n * D; i++) x[i] = unit ? 0.05 + 0.9 * urand(s) : 2.0 * (urand(s) * 2 - 1);
}

static void check_invariants(const char *name, const char *path, const char *text, int unit_domain) {
    model m;
    if (!load(&m, path, text, 0.4, 7)) { CHECK(0, "%s did not compile", name); return; }
    const int64_t n = 13;
    int D = m.D, C = m.C;
    uint64_t s = 99;
    double *x = malloc(sizeof(double) * n * D), *ctx = malloc(sizeof(double) * n * (C ? C : 1));
    double *z = malloc(sizeof(double) * n * D), *ld = malloc(sizeof(double) * n);
    double *x2 = malloc(sizeof(double) * n * D), *ld2 = malloc(sizeof(double) * n), *lp = malloc(sizeof(double) * n);
    make_inputs(x, n, D, unit_domain, &s);
    for (int64_t i = 0; i < n * C; i++) ctx[i] = urand(&s) < 0.5 ? 0.0 : 1.0;
    run(&m, PROG_FORWARD, n, x, ctx, z, ld);
    run(&m, PROG_INVERSE, n, z, ctx, x2, ld2);
    run(&m, PROG_LOG_PROB, n, x, ctx, lp, NULL);
    double maxerr = 0;
    for (int64_t i = 0; i < n * D; i++) maxerr = fmax(maxerr, fabs(x2[i] - x[i]));
    CHECK(maxerr <= 1e-10, "%s: max |inverse(forward(x)) - x| = %g", name, maxerr);
    /* the transform is non-trivial: z differs from x */
    double moved = 0;
    for (int64_t i = 0; i < n * D; i++) moved = fmax(moved, fabs(z[i] - x[i]));
    CHECK(moved > 1e-3, "%s: forward is the identity (init_scale had no effect)", name);
    for (int64_t r = 0; r < n; r++) {
        CHECK_NEAR(ld2[r], -ld[r], 1e-9 * (1 + fabs(ld[r])));
        /* log p = log N(z; 0, I) + logdet for standard-normal bases */
        if (m.g->base == BASE_NORMAL) {
            double b = 0;
            for (int j = 0; j < D; j++) b += -0.5 * z[r * D + j] * z[r * D + j] - 0.5 * log(2 * M_PI);
            CHECK_NEAR(lp[r], b + ld[r], 1e-9 * (1 + fabs(lp[r])));
        }
    }
    /* numerical Jacobian by central differences on the first rows */
    double h = 1e-6;
    double *xp = malloc(sizeof(double) * D), *xm = malloc(sizeof(double) * D);
    double *zp = malloc(sizeof(double) * D), *zm = malloc(sizeof(double) * D), *J = malloc(sizeof(double) * D * D);
    double dummy;
    for (int r = 0; r < 3; r++) {
        for (int j = 0; j < D; j++) {
            memcpy(xp, x + r * D, sizeof(double) * D);
            memcpy(xm, x + r * D, sizeof(double) * D);
            xp[j] += h;
            xm[j] -= h;
            run(&m, PROG_FORWARD, 1, xp, ctx + r * C, zp, &dummy);
            run(&m, PROG_FORWARD, 1, xm, ctx + r * C, zm, &dummy);
            for (int i = 0; i < D; i++) J[i * D + j] = (zp[i] - zm[i]) / (2 * h);
        }
        /* log|det J| by LU with partial pivoting */
        double logdet = 0;
        for (int k = 0; k < D; k++) {
            int piv = k;
            for (int i = k + 1; i < D; i++) if (fabs(J[i * D + k]) > fabs(J[piv * D + k])) piv = i;
            if (piv != k) for (int j = 0; j < D; j++) { double t = J[k * D + j]; J[k * D + j] = J[piv * D + j]; J[piv * D + j] = t; }
            logdet += log(fabs(J[k * D + k]));
            for (int i = k + 1; i < D; i++) {
                double f = J[i * D + k] / J[k * D + k];
                for (int j = k; j < D; j++) J[i * D + j] -= f * J[k * D + j];
            }
        }
        CHECK(fabs(logdet - ld[r]) <= 1e-6 * fmax(1.0, fabs(ld[r])), "%s row %d: numerical log|det J| %.10g, derived %.10g",
              name, r, logdet, ld[r]);
    }
    free(xp); free(xm); free(zp); free(zm); free(J);
    free(x); free(ctx); free(z); free(ld); free(x2); free(ld2); free(lp);
    unload(&m);
}

TEST(examples_invariants) {
    check_invariants("moons", "examples/moons.flow", NULL, 0);
    check_invariants("maf8", "examples/maf.flow", NULL, 0);
    check_invariants("glow16", "examples/glow_dense.flow", NULL, 0);
    check_invariants("cmoons", "examples/cmoons.flow", NULL, 0);
    check_invariants("custom", "examples/custom.flow", NULL, 0);
}

TEST(primitive_invariants) {
    check_invariants("affine exp", NULL, "flow f { input x: f64[3]\n affine_coupling mask=[0,1,1] net=mlp(8) scaling=exp\n reverse\n affine_coupling net=mlp(8, act=tanh) scaling=exp }", 0);
    check_invariants("affine tanh", NULL, "flow f { input x: f64[4]\n affine_coupling mask=alternate net=mlp(8, act=elu) clamp=1.5\n permute seed=3\n affine_coupling mask=alternate(1) net=mlp(8, act=gelu) }", 0);
    check_invariants("affine sigmoid", NULL, "flow f { input x: f64[4]\n affine_coupling net=mlp(8, act=softplus) scaling=sigmoid\n permute\n affine_coupling net=mlp(8, act=sigmoid) scaling=sigmoid }", 0);
    check_invariants("additive", NULL, "flow f { input x: f64[5]\n additive_coupling mask=half net=mlp(8, act=leaky_relu)\n reverse\n additive_coupling net=mlp(8) }", 0);
    check_invariants("actnorm + linear lu", NULL, "flow f { input x: f64[5]\n actnorm\n linear lu\n actnorm\n linear }", 0);
    check_invariants("leaky_relu", NULL, "flow f { input x: f64[3]\n actnorm\n leaky_relu slope=0.2\n linear lu\n leaky_relu }", 0);
    check_invariants("sigmoid", NULL, "flow f { input x: f64[3]\n actnorm\n sigmoid }", 0);
    check_invariants("logit", NULL, "flow f { input x: f64[3]\n logit\n actnorm }", 1);
    check_invariants("maf exp", NULL, "flow f { input x: f64[4]\n maf net=made(16, 16) scaling=exp\n reverse\n maf net=made(12, act=tanh) }", 0);
    check_invariants("maf context", NULL, "flow f { input x: f64[3]\n context c: f64[2]\n maf net=made(16)\n reverse\n maf net=made(8) scaling=sigmoid }", 0);
    check_invariants("maf 1-D", NULL, "flow f { input x: f64[1]\n context c: f64[2]\n maf net=made(4) }", 0);
    check_invariants("learned base", NULL, "flow f { input x: f64[2]\n base normal(learned)\n affine_coupling net=mlp(8) }", 0);
    check_invariants("logistic base", NULL, "flow f { input x: f64[2]\n base logistic\n affine_coupling net=mlp(8) }", 0);
    check_invariants("glow_step", NULL, "flow f { input x: f64[6]\n repeat 2 { glow_step net=mlp(8) } }", 0);
    check_invariants("residual net", NULL, "net r(h) { dense h tanh; residual { dense h relu; dense h }; dense out }\n"
                     "flow f { input x: f64[4]\n context c: f64[1]\n affine_coupling net=r(8)\n reverse\n additive_coupling net=r(6) }", 0);
    check_invariants("graph form", NULL, "flow f { input x: f64[5]\n a, b = split x [2, 3]\n s, t = chunk mlp(8)(a) 2\n"
                     " b2 = affine b scale=s shift=t scaling=exp\n u = additive a shift=mlp(8)(b2)\n z = concat b2, u\n output z }", 0);
    /* a shift made by concatenating two conditioner outputs */
    check_invariants("conditioner concat", NULL, "flow f { input x: f64[5]\n a, b = split x [2, 3]\n p = mlp(8, out=1)(a)\n"
                     " q = mlp(8, out=2)(a)\n t = concat p, q\n b2 = additive b shift=t\n z = concat a, b2\n output z }", 0);
}

/* the density of a 2-D model integrates to 1, and samples have the moments it implies */
static void check_density(const char *path, const double *ctxval) {
    model m;
    if (!load(&m, path, NULL, 0.3, 11)) { CHECK(0, "%s did not compile", path); return; }
    const int G = 200;
    const double L = 9.0, hstep = 2 * L / G;
    int64_t n = (int64_t)G * G;
    double *x = malloc(sizeof(double) * n * 2), *lp = malloc(sizeof(double) * n), *ctx = malloc(sizeof(double) * n * 2);
    for (int i = 0; i < G; i++)
        for (int j = 0; j < G; j++) {
            x[((int64_t)i * G + j) * 2] = -L + (i + 0.5) * hstep;
            x[((int64_t)i * G + j) * 2 + 1] = -L + (j + 0.5) * hstep;
        }
    for (int64_t r = 0; r < n; r++) { ctx[2 * r] = ctxval ? ctxval[0] : 0; ctx[2 * r + 1] = ctxval ? ctxval[1] : 0; }
    run(&m, PROG_LOG_PROB, n, x, ctx, lp, NULL);
    double mass = 0, mean[2] = { 0, 0 };
    for (int64_t r = 0; r < n; r++) {
        double p = exp(lp[r]) * hstep * hstep;
        mass += p;
        mean[0] += p * x[2 * r];
        mean[1] += p * x[2 * r + 1];
    }
    CHECK(fabs(mass - 1.0) <= 1e-3, "%s: density integrates to %.6f", path, mass);
    double var[2] = { 0, 0 };
    for (int64_t r = 0; r < n; r++) {
        double p = exp(lp[r]) * hstep * hstep;
        for (int k = 0; k < 2; k++) var[k] += p * (x[2 * r + k] - mean[k]) * (x[2 * r + k] - mean[k]);
    }
    /* samples */
    const int64_t S = 20000;
    double *xs = malloc(sizeof(double) * S * 2), *lps = malloc(sizeof(double) * S), *cs = malloc(sizeof(double) * S * 2);
    for (int64_t r = 0; r < S; r++) { cs[2 * r] = ctx[0]; cs[2 * r + 1] = ctx[1]; }
    const double *args[1] = { cs };
    double *outs[2] = { xs, lps };
    double temp = 1.0;
    char err[256];
    CHECK(interp_run(m.dv.p[PROG_SAMPLE], S, 0, 2024, args, &temp, outs, m.params, m.off, err, sizeof err) == 0, "%s", err);
    double sm[2] = { 0, 0 };
    for (int64_t r = 0; r < S; r++) { sm[0] += xs[2 * r]; sm[1] += xs[2 * r + 1]; }
    for (int k = 0; k < 2; k++) {
        sm[k] /= S;
        double se = sqrt(var[k] / S);
        CHECK(fabs(sm[k] - mean[k]) <= 5 * se, "%s: sample mean[%d] %.4f, density mean %.4f (se %.4f)", path, k, sm[k], mean[k], se);
    }
    double sv[2] = { 0, 0 };
    for (int64_t r = 0; r < S; r++) for (int k = 0; k < 2; k++) sv[k] += (xs[2 * r + k] - sm[k]) * (xs[2 * r + k] - sm[k]);
    for (int k = 0; k < 2; k++) {
        sv[k] /= S - 1;
        CHECK(fabs(sv[k] - var[k]) <= 0.05 * var[k], "%s: sample var[%d] %.4f, density var %.4f", path, k, sv[k], var[k]);
    }
    /* the sample program's log-density agrees with log_prob at the sampled points */
    double *lp2 = malloc(sizeof(double) * 64);
    run(&m, PROG_LOG_PROB, 64, xs, cs, lp2, NULL);
    for (int r = 0; r < 64; r++) CHECK_NEAR(lp2[r], lps[r], 1e-8 * (1 + fabs(lps[r])));
    free(lp2); free(xs); free(lps); free(cs); free(x); free(lp); free(ctx);
    unload(&m);
}

TEST(density_integrates_to_one_and_samples_match) {
    check_density("examples/moons.flow", NULL);
    double c[2] = { 0, 1 };
    check_density("examples/cmoons.flow", c);
}

/* The inverse and sample programs invert a MAF layer by degree (derive.c, maf_inverse_steps:
 * each MADE unit once, no loop); derive_inverse_into (what grad.c differentiates) keeps the
 * loop of D trips. The two give the same x and log-determinant, exactly (the sums have the
 * same nonzero terms in the same order), for several depths, widths (hidden layers narrower
 * than D - 1, so some degrees have no unit), activations, scalings, D = 2 and a context. */
TEST(maf_steps_equal_loop) {
    static const char *const flows[] = {
        "flow a { input x: f64[8]\n maf net=made(64, 64)\n reverse\n maf net=made(40, act=tanh) scaling=exp }",
        "flow b { input x: f64[2]\n maf net=made(16) scaling=sigmoid }",
        "flow c { input x: f64[5]\n context c: f64[3]\n maf net=made(32, 32, act=elu)\n reverse\n maf net=made(12) }",
        "flow d { input x: f64[16]\n maf net=made(8, 24, 6, act=gelu)\n reverse\n maf net=made(30) scaling=sigmoid }",
        "flow e { input x: f64[32]\n maf net=made(48, 48)\n reverse\n maf net=made(20, act=softplus) }",
    };
    for (size_t f = 0; f < sizeof flows / sizeof flows[0]; f++) {
        model m;
        if (!load(&m, NULL, flows[f], 0.7, 11 + f)) { CHECK(0, "%s", flows[f]); continue; }
        const tprog *ps = m.dv.p[PROG_INVERSE];
        int loops = 0;
        for (int i = 0; i < ps->nn; i++) loops += ps->nodes[i].op == T_LOOP_BEGIN;
        CHECK(loops == 0, "%s: the inverse program has %d loops", flows[f], loops);
        tprog *pl = tprog_new(&m.ar, "inverse_loop");
        tref xl, ldl;
        char err[256];
        int ok = derive_inverse_into(m.g, pl, &xl, &ldl, err, sizeof err) == 0;
        CHECK(ok, "%s: %s", flows[f], err);
        if (!ok) { unload(&m); continue; }
        t_output(pl, xl);
        t_output(pl, ldl);
        CHECK(tir_verify(pl, err, sizeof err) == 0, "%s", err);
        loops = 0;
        for (int i = 0; i < pl->nn; i++) loops += pl->nodes[i].op == T_LOOP_BEGIN;
        int nmaf = 0;
        for (const char *q = flows[f]; (q = strstr(q, "maf net=")) != NULL; q++) nmaf++;
        CHECK(loops == nmaf, "%s: the loop inverse has %d loops, for %d maf layers", flows[f], loops, nmaf);
        enum { N = 64 };
        uint64_t rs = 99 + f;
        double *z = malloc(sizeof(double) * N * (size_t)m.D), *c = malloc(sizeof(double) * N * (size_t)(m.C + 1));
        double *x[2] = { malloc(sizeof(double) * N * (size_t)m.D), malloc(sizeof(double) * N * (size_t)m.D) }, ld[2][N];
        make_inputs(z, N, m.D, 0, &rs);
        make_inputs(c, N, m.C + 1, 0, &rs);
        const double *args[2] = { z, m.C ? c : NULL };
        for (int k = 0; k < 2; k++) {
            double *outs[2] = { x[k], ld[k] }, temp = 1.0;
            CHECK(interp_run(k ? pl : ps, N, 0, 42, args, &temp, outs, m.params, m.off, err, sizeof err) == 0, "%s", err);
        }
        int diff = 0;
        for (int i = 0; i < N * m.D; i++) diff += !(x[0][i] == x[1][i]);
        for (int i = 0; i < N; i++) diff += !(ld[0][i] == ld[1][i]);
        CHECK(diff == 0, "%s: %d values differ (x[0] %.17g vs %.17g, logdet[0] %.17g vs %.17g)", flows[f], diff, x[0][0], x[1][0],
              ld[0][0], ld[1][0]);
        double moved = 0;
        for (int i = 0; i < N * m.D; i++) moved = fmax(moved, fabs(x[0][i] - z[i]));
        CHECK(moved > 1e-3, "%s: the flow is the identity (%g)", flows[f], moved);
        free(z); free(c); free(x[0]); free(x[1]);
        unload(&m);
    }
}

/* t_gather reads through GATHER and CONCAT nodes: a merge (concat + gather), a reversal and
 * a split become one gather of a part; the values equal the copies done one by one. Not
 * through a loop's body or state, nor through nodes below compose_floor. */
TEST(gather_composition) {
    arena ar = { 0 };
    enum { W = 6, N = 5 };
    tprog *p = tprog_new(&ar, "compose");
    tref a = t_arg(p, 0, W / 2), b = t_arg(p, 1, W / 2), parts[2] = { a, b };
    int32_t inv[W] = { 0, 3, 1, 4, 2, 5 }, rev[W] = { 5, 4, 3, 2, 1, 0 }, even[W / 2] = { 0, 2, 4 }, odd[W / 2] = { 1, 3, 5 };
    tref m = t_gather(p, t_concat(p, parts, 2), inv, W);   /* merge: a0 b0 a1 b1 a2 b2 */
    tref r = t_gather(p, m, rev, W);                     /* b2 a2 b1 a1 b0 a0 */
    tref e = t_gather(p, r, even, W / 2), o = t_gather(p, r, odd, W / 2);   /* b2 b1 b0, a2 a1 a0 */
    CHECK(p->nodes[e].op == T_GATHER && p->nodes[e].in[0] == b, "the even part reads %%%d, not b", p->nodes[e].in[0]);
    CHECK(p->nodes[o].op == T_GATHER && p->nodes[o].in[0] == a, "the odd part reads %%%d, not a", p->nodes[o].in[0]);
    int32_t id[W / 2] = { 0, 1, 2 };
    CHECK(t_gather(p, t_concat(p, parts, 2), id, W / 2) == a, "the first part in order is the part itself");
    CHECK(t_gather(p, b, id, W / 2) == b, "an identity gather is its input");
    /* a loop: gathers in its body are not composed through the loop's state */
    tref lb = t_loop_begin(p, a, 2);
    tref body = t_gather(p, lb, (int32_t[]){ 1, 2, 0 }, W / 2);
    tref body2 = t_gather(p, body, (int32_t[]){ 2, 0, 1 }, W / 2);
    tref body3 = t_gather(p, body2, (int32_t[]){ 2, 0, 1 }, W / 2);
    CHECK(p->nodes[body2].in[0] == body, "in the loop: reads %%%d, not the gather of the state", p->nodes[body2].in[0]);
    tref le = t_loop_end(p, body3, lb);
    tref after = t_gather(p, le, (int32_t[]){ 1, 2, 0 }, W / 2);
    p->compose_floor = p->nn;
    tref fl = t_gather(p, r, even, W / 2);
    CHECK(p->nodes[fl].in[0] == r, "below the floor: reads %%%d, not the reversal", p->nodes[fl].in[0]);
    p->compose_floor = 0;
    t_output(p, t_concat(p, (tref[]){ e, o, after, fl }, 4));
    char err[256];
    CHECK(tir_verify(p, err, sizeof err) == 0, "%s", err);
    double xa[N * 3], xb[N * 3], out[N * 12];
    for (int i = 0; i < N * 3; i++) { xa[i] = i + 0.5; xb[i] = -i - 0.25; }
    const double *args[2] = { xa, xb };
    double *outs[1] = { out };
    CHECK(interp_run(p, N, 0, 0, args, NULL, outs, NULL, NULL, err, sizeof err) == 0, "%s", err);
    int bad = 0;
    for (int r0 = 0; r0 < N; r0++) {
        const double *A = xa + 3 * r0, *B = xb + 3 * r0, *y = out + 12 * r0;
        double lp[3] = { A[0], A[1], A[2] };   /* the loop: two trips of (1, 2, 0), (2, 0, 1), (2, 0, 1) */
        for (int t = 0; t < 2; t++) {
            double q[3] = { lp[1], lp[2], lp[0] }, q2[3] = { q[2], q[0], q[1] }, q3[3] = { q2[2], q2[0], q2[1] };
            memcpy(lp, q3, sizeof q3);
        }
        double want[12] = { B[2], B[1], B[0], A[2], A[1], A[0], lp[1], lp[2], lp[0], B[2], B[1], B[0] };
        for (int k = 0; k < 12; k++) bad += y[k] != want[k];
    }
    CHECK(bad == 0, "%d values differ from the copies done one by one", bad);
    arena_free(&ar);
}

int main(void) {
    RUN(gather_composition);
    RUN(examples_invariants);
    RUN(primitive_invariants);
    RUN(density_integrates_to_one_and_samples_match);
    RUN(maf_steps_equal_loop);
    return t_done();
}

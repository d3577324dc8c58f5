/* fuzz/fuzz_flow.c: structure-aware fuzzing of the numerics. The bytes are decoded (a small
 * byte consumer: each decision takes the next byte, 0 once the input is used up) into a
 * well-formed .flow text and a batch of inputs; the flow is compiled twice, through the JIT
 * in f64 at -O0 and for the reference interpreter, with the same initial parameters.
 *
 * The flow: dimension 1..8, an optional context of 1..3, a base (normal, normal(learned),
 * logistic), 1..7 layers (actnorm, linear lu, affine/additive coupling with every kind of
 * mask, maf, glow_step, reverse, permute seed=, leaky_relu slope=, sigmoid, logit), a few
 * wrapped in `repeat`; or, one time in four, graph form (split/chunk, affine with scale and/or
 * shift, additive, a layer applied to a value, concat in either order, output); conditioners mlp/made with 1..2 hidden layers of width 1..8 and any
 * activation, or a user net with a residual block; scalings exp, tanh (clamp=) and sigmoid;
 * parameters from the initializer with init_scale 0..0.5 (so no layer is the identity).
 *
 * Inputs are kept inside the primitives' domains, and the generator keeps a bound M on the
 * magnitude of every intermediate value (from the initializer's bounds: dense weights
 * |w| <= 1/sqrt(fan_in), zero-initialized parameters |p| <= init_scale): a layer that could
 * push M past 1e8, a sigmoid on values that may exceed 30 in magnitude, a logit on values not
 * known to be in (0, 1), are not generated. So every value stays finite and well away from
 * overflow, and a non-finite output is a bug.
 *
 * Aborts (a finding) when, for any row:
 *   - the flow does not compile (the generator writes only valid flows);
 *   - z, log|det|, x = inverse(z), log p(x) or a sample is non-finite (samples only
 *     when the flow's inverse accepts all of R^D: a flow whose last layer is sigmoid does not);
 *   - |inverse(forward(x)) - x| > 1e-8 (1 + |x| + |z|) cond(J), J the Jacobian (central
 *     differences), skipped when cond(J) > 1e10;
 *   - the forward log|det| differs from log|det J| by more than 1e-5 (1 + |log det|) plus
 *     10x the difference between two step sizes (rows where the two step sizes differ by
 *     more than 1e-4 (1 + |log det|) have a kink within a step: relu, leaky_relu; skipped);
 *   - the inverse log|det| is not minus the forward's;
 *   - log p(x) is not log p_base(z) + log|det| (base density computed here);
 *   - the JIT and the interpreter differ (forward, inverse, log_prob, sample) by more than
 *     1e-9 (1 + |a| + |b|) cond(J);
 *   - a crash, leak or sanitizer report.
 * See docs/fuzzing.md. Set NFC_FUZZ_VERBOSE=1 to print each generated flow. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nfc.h"

/* ---- the byte consumer ---- */
typedef struct {
    const uint8_t *p;
    size_t         n, i;
} bytes;

static unsigned take(bytes *b) { return b->i < b->n ? b->p[b->i++] : 0; }
static int pick(bytes *b, int k) { return (int)(take(b) % (unsigned)k); }
/* a double in [0, 1] from two bytes */
static double unit(bytes *b) {
    unsigned v = take(b);
    v = v << 8 | take(b);
    return v / 65535.0;
}

/* ---- text ---- */
typedef struct {
    char  *s;
    size_t n, cap;
} str;

static void put(str *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(str *t, const char *fmt, ...) {
    va_list ap;
    if (!t->s) {
        t->cap = 256;
        t->s = malloc(t->cap);
        if (!t->s) abort();
    }
    for (;;) {
        size_t room = t->cap - t->n;
        va_start(ap, fmt);
        int k = vsnprintf(t->s + t->n, room, fmt, ap);
        va_end(ap);
        if (k < 0) abort();
        if ((size_t)k < room) { t->n += (size_t)k; return; }
        t->cap = t->cap * 2 + (size_t)k + 64;
        t->s = realloc(t->s, t->cap);
        if (!t->s) abort();
    }
}

/* ---- the generator ---- */
static const char *const acts[] = { "relu", "tanh", "elu", "gelu", "sigmoid", "softplus", "leaky_relu" };
enum { NACTS = sizeof acts / sizeof acts[0] };
static const double scales[] = { 0, 0.05, 0.1, 0.2, 0.3, 0.5 };

typedef struct {
    int    D, C;
    double s;        /* init_scale */
    double M;        /* bound on |value| of the running value */
    double Mctx;     /* bound on |context| */
    double Mpre;     /* bound before the last sigmoid (for the logit after it) */
    int    unitdom;  /* the running value is in (0, 1)^D (a sigmoid, then only permutations) */
    int    nexp;     /* exp scalings so far */
    int    user_net; /* the flow uses the user net 'un' */
    int    any_sigmoid;  /* a sigmoid layer somewhere (its inverse needs (0,1)) */
    int    bad;      /* graph form: a bound was exceeded; the input is skipped */
    double Minv;     /* rough bound on |value| in the inverse of a sample's z (a heuristic: composed
                        in forward order) */
} gen;

/* A conditioner: text and the bound on its outputs for inputs bounded by m (fan_in inputs). */
static double net_text(bytes *b, gen *g, str *t, int made, int fan_in, double m) {
    int kind = made ? 0 : pick(b, 5);   /* 0..3: mlp/made, 4: the user net */
    double s = g->s;
    if (kind == 4) {
        int h = 1 + pick(b, 8);
        put(t, "un(%d)", h);
        g->user_net = 1;
        /* dense h tanh; residual { dense h elu; dense h }; dense out */
        double a = 1;                                          /* tanh */
        double r = sqrt(h) * a + s;                            /* dense h */
        r = (r > 1 ? r : 1) + 0;                               /* elu >= -1, <= r */
        r = sqrt(h) * r + s;                                   /* dense h */
        a = a + r;                                             /* residual */
        (void)fan_in; (void)m;
        return s * h * a + s;                                  /* dense out */
    }
    int nh = 1 + pick(b, 2);
    int act = pick(b, NACTS + 1);   /* NACTS: default */
    put(t, "%s(", made ? "made" : "mlp");
    double v = m;
    int fin = fan_in, last = fan_in;
    for (int k = 0; k < nh; k++) {
        int h = 1 + pick(b, 8);
        put(t, "%s%d", k ? ", " : "", h);
        v = sqrt(fin) * v + s;                     /* hidden dense: |w| <= 1/sqrt(fan_in), bias from init_scale */
        if (act < NACTS && (!strcmp(acts[act], "tanh") || !strcmp(acts[act], "sigmoid"))) v = 1;
        else v = v + 1;                            /* elu >= -1, softplus <= |x| + log 2, gelu ~ */
        fin = h;
        last = h;
    }
    if (act < NACTS) put(t, ", act=%s", acts[act]);
    put(t, ")");
    return s * last * v + s;                       /* the last dense layer starts at init_scale */
}

static void mask_text(bytes *b, gen *g, str *t) {
    int D = g->D;
    switch (pick(b, 5)) {
    case 0: break;                                      /* default: half */
    case 1: put(t, " mask=half"); break;
    case 2: put(t, " mask=alternate"); break;
    case 3: put(t, " mask=alternate(%d)", pick(b, 4)); break;
    default: {
        int m[8], ones = 0;
        for (int j = 0; j < D; j++) { m[j] = pick(b, 2); ones += m[j]; }
        if (ones == 0) m[D - 1] = 1;
        if (ones == D) m[0] = 0;
        put(t, " mask=[");
        for (int j = 0; j < D; j++) put(t, "%s%d", j ? ", " : "", m[j]);
        put(t, "]");
    }
    }
}

/* The scaling option, for a net whose outputs are bounded by N: returns the bound Ls on
 * |log s| (the forward grows values by at most e^Ls, the inverse too), and counts exp. */
static double scaling_text(bytes *b, gen *g, str *t, double N, int *is_exp) {
    static const double clamps[] = { 0.5, 1, 2, 3 };
    (void)g;
    *is_exp = 0;
    switch (pick(b, 4)) {
    case 0: return 2;                                   /* default tanh, clamp 2 */
    case 1: { double c = clamps[pick(b, 4)]; put(t, " scaling=tanh clamp=%g", c); return c; }
    case 2: put(t, " scaling=sigmoid"); return N + 2;   /* log sigmoid(r + 2) in (-(N + 2), 0) */
    default:
        *is_exp = 1;
        put(t, " scaling=exp");
        return N;
    }
}

/* Append one layer (or a substitute) to t and update the bounds. */
static void layer(bytes *b, gen *g, str *t, int in_repeat) {
    int D = g->D, C = g->C;
    double s = g->s, M = g->M;
    double mc = g->Mctx > M ? g->Mctx : M;
    int kind = pick(b, 12);
    str l = { 0 };
    put(&l, "  ");
    double M2 = M, Ls = 0;
    double I = g->Minv, I2 = I;   /* the inverse, from the output back: I2 bounds this layer's inverse output */
    int unit2 = 0, sig = 0, is_exp = 0;
    if ((kind == 2 || kind == 3 || kind == 6) && D < 2) kind = 0;
    switch (kind) {
    case 0: put(&l, "actnorm"); M2 = exp(s) * M + s; I2 = exp(s) * (I + s); break;
    case 1:
        put(&l, "linear lu");
        M2 = (1 + (D - 1) * s) * (exp(s) + (D - 1) * s) * M + s;
        I2 = pow(1 + s * exp(s), 2 * D) * exp(s) * (I + s);
        break;
    case 2: case 3: {  /* couplings: the net reads about D/2 values; D - 1 at most */
        int aff = kind == 2;
        put(&l, "%s", aff ? "affine_coupling" : "additive_coupling");
        mask_text(b, g, &l);
        put(&l, " net=");
        double N = net_text(b, g, &l, 0, D - 1 + C, mc);
        if (aff) Ls = scaling_text(b, g, &l, N, &is_exp);
        M2 = exp(Ls) * M + N;
        I2 = exp(Ls) * (I + N);
        break;
    }
    case 4: {
        put(&l, "maf net=");
        double N = net_text(b, g, &l, 1, D + C, mc);
        Ls = scaling_text(b, g, &l, N, &is_exp);
        M2 = exp(Ls) * M + N;
        I2 = exp(Ls) * (I + N);
        break;
    }
    case 5: put(&l, "reverse"); unit2 = g->unitdom; break;
    case 6: {
        double a = exp(s) * M + s;
        a = (1 + (D - 1) * s) * (exp(s) + (D - 1) * s) * a + s;
        put(&l, "glow_step net=");
        double mn = g->Mctx > a ? g->Mctx : a;
        double N = net_text(b, g, &l, 0, D - 1 + C, mn);
        Ls = scaling_text(b, g, &l, N, &is_exp);
        M2 = exp(Ls) * a + N;
        I2 = pow(1 + s * exp(s), 2 * D) * exp(2 * s) * (exp(Ls) * (I + N) + 2 * s);
        break;
    }
    case 7: put(&l, "permute"); if (pick(b, 2)) put(&l, " seed=%d", pick(b, 50)); unit2 = g->unitdom; break;
    case 8: {
        static const double slopes[] = { 0.01, 0.1, 0.5, 1 };
        int k = pick(b, 5);
        put(&l, "leaky_relu");
        if (k < 4) put(&l, " slope=%g", slopes[k]);
        I2 = I / (k < 4 ? slopes[k] : 0.01);
        break;
    }
    case 9: case 10:
        if (in_repeat || M > 30) { free(l.s); return; }
        put(&l, "sigmoid"); M2 = 1; unit2 = 1; sig = 1;
        break;
    default:
        if (in_repeat || !g->unitdom) { free(l.s); return; }
        put(&l, "logit"); M2 = g->Mpre; I2 = 1;
        break;
    }
    if ((is_exp && g->nexp >= 2) || Ls > 20) { free(l.s); return; }
    if (!(M2 <= 1e8)) { free(l.s); return; }      /* could grow too large: leave it out */
    put(&l, "\n");
    put(t, "%s", l.s);
    free(l.s);
    if (sig) g->Mpre = M;
    g->M = M2;
    g->unitdom = unit2;
    g->nexp += is_exp;
    g->any_sigmoid |= sig;
    g->Minv = I2;
}

/* A flow in graph form (D >= 2): one or two blocks of
 *     aK, bK = split V [k, D-k]  (or: split V, chunk V 2, when D is even)
 *     bK2 = affine bK scale=.. shift=.. | affine bK shift=.. | affine bK scale=.. | additive bK shift=..
 *     hK = LAYER bK2              (actnorm, linear lu, leaky_relu, reverse, permute; or hK = bK2 is skipped)
 *     uK = additive aK shift=NET(hK)
 *     zK = concat uK, hK  (or hK, uK)
 * then `output zK`. Bounds as in layer(). */
static void graph(bytes *b, gen *g, str *t) {
    int D = g->D, C = g->C;
    const char *v = "x";
    char vname[16];
    int nblocks = 1 + pick(b, 2);
    for (int k = 1; k <= nblocks; k++) {
        double M = g->M, s = g->s, I = g->Minv;
        double mc = g->Mctx > M ? g->Mctx : M;
        int na = 1 + pick(b, D - 1), nb;
        int how = pick(b, 3);
        if (how > 0 && D % 2 == 0) {
            na = D / 2;
            if (how == 1) put(t, "  a%d, b%d = split %s\n", k, k, v);
            else put(t, "  a%d, b%d = chunk %s 2\n", k, k, v);
        } else {
            put(t, "  a%d, b%d = split %s [%d, %d]\n", k, k, v, na, D - na);
        }
        nb = D - na;
        str net = { 0 };
        double N1 = net_text(b, g, &net, 0, na + C, mc), Ls = 0;
        int is_exp = 0;
        switch (pick(b, 4)) {
        case 0:
            put(t, "  s%d, t%d = chunk %s(a%d) 2\n  b%d2 = affine b%d scale=s%d shift=t%d", k, k, net.s, k, k, k, k, k);
            Ls = scaling_text(b, g, t, N1, &is_exp);
            break;
        case 1: put(t, "  b%d2 = affine b%d shift=%s(a%d)", k, k, net.s, k); break;
        case 2:
            put(t, "  b%d2 = affine b%d scale=%s(a%d)", k, k, net.s, k);
            Ls = scaling_text(b, g, t, N1, &is_exp);
            N1 = 0;
            break;
        default: put(t, "  b%d2 = additive b%d shift=%s(a%d)", k, k, net.s, k); break;
        }
        put(t, "\n");
        free(net.s);
        if (Ls > 20 || (is_exp && g->nexp >= 2)) { put(t, "  # (scale bound too large: regenerate)\n"); }
        double Mb = exp(Ls) * M + N1, Ib = exp(Ls) * (I + N1);
        const char *hv = "h";
        switch (pick(b, 6)) {
        case 0: put(t, "  h%d = actnorm b%d2\n", k, k); Mb = exp(s) * Mb + s; Ib = exp(s) * (Ib + s); break;
        case 1:
            put(t, "  h%d = linear b%d2 lu\n", k, k);
            Mb = (1 + (nb - 1) * s) * (exp(s) + (nb - 1) * s) * Mb + s;
            Ib = pow(1 + s * exp(s), 2 * nb) * exp(s) * (Ib + s);
            break;
        case 2: put(t, "  h%d = leaky_relu b%d2 slope=0.5\n", k, k); Ib *= 2; break;
        case 3: put(t, "  h%d = reverse b%d2\n", k, k); break;
        case 4: put(t, "  h%d = permute b%d2 seed=%d\n", k, k, pick(b, 9)); break;
        default: hv = "b"; break;   /* no layer: use bK2 itself */
        }
        char hname[16];
        snprintf(hname, sizeof hname, "%s%d%s", hv, k, hv[0] == 'b' ? "2" : "");
        str net2 = { 0 };
        double m2 = g->Mctx > Mb ? g->Mctx : Mb;
        double N2 = net_text(b, g, &net2, 0, nb + C, m2);
        put(t, "  u%d = additive a%d shift=%s(%s)\n", k, k, net2.s, hname);
        free(net2.s);
        if (pick(b, 2)) put(t, "  z%d = concat u%d, %s\n", k, k, hname);
        else put(t, "  z%d = concat %s u%d\n", k, hname, k);
        double Mu = M + N2, Iu = I + N2;
        g->M = Mu > Mb ? Mu : Mb;
        g->Minv = Iu > Ib ? Iu : Ib;
        g->nexp += is_exp;
        snprintf(vname, sizeof vname, "z%d", k);
        v = vname;
        if (!(g->M <= 1e8) || Ls > 20 || g->nexp > 2) g->bad = 1;
    }
    put(t, "  output %s\n", v);
}

/* ---- numerics ---- */
/* log|det A| and ||A^-1||_inf of a D x D matrix (partial pivoting); returns 0, or -1 if singular */
static int lu_logdet(const double *A, int D, double *logdet, double *inv_norm) {
    double a[64], inv[64];
    int perm[8];
    memcpy(a, A, sizeof(double) * (size_t)(D * D));
    for (int i = 0; i < D; i++) perm[i] = i;
    double ld = 0;
    for (int k = 0; k < D; k++) {
        int p = k;
        for (int i = k + 1; i < D; i++) if (fabs(a[i * D + k]) > fabs(a[p * D + k])) p = i;
        if (a[p * D + k] == 0) return -1;
        if (p != k) {
            for (int j = 0; j < D; j++) { double tmp = a[k * D + j]; a[k * D + j] = a[p * D + j]; a[p * D + j] = tmp; }
            int tp = perm[k]; perm[k] = perm[p]; perm[p] = tp;
        }
        ld += log(fabs(a[k * D + k]));
        for (int i = k + 1; i < D; i++) {
            double f = a[i * D + k] / a[k * D + k];
            a[i * D + k] = f;
            for (int j = k + 1; j < D; j++) a[i * D + j] -= f * a[k * D + j];
        }
    }
    /* inverse column by column: solve A x = e_c */
    for (int c = 0; c < D; c++) {
        double y[8];
        for (int i = 0; i < D; i++) {
            double v = perm[i] == c ? 1 : 0;
            for (int j = 0; j < i; j++) v -= a[i * D + j] * y[j];
            y[i] = v;
        }
        for (int i = D - 1; i >= 0; i--) {
            double v = y[i];
            for (int j = i + 1; j < D; j++) v -= a[i * D + j] * y[j];
            y[i] = v / a[i * D + i];
        }
        for (int i = 0; i < D; i++) inv[i * D + c] = y[i];
    }
    double nrm = 0;
    for (int i = 0; i < D; i++) {
        double r = 0;
        for (int j = 0; j < D; j++) r += fabs(inv[i * D + j]);
        if (r > nrm) nrm = r;
    }
    *logdet = ld;
    *inv_norm = nrm;
    return 0;
}

static const char *cur_text;   /* the flow of the current input, for messages */

#define BUG(...)                                                                              \
    do {                                                                                      \
        fprintf(stderr, "fuzz_flow: " __VA_ARGS__);                                           \
        fprintf(stderr, "\n--- the flow:\n%s---\n", cur_text);                                \
        abort();                                                                              \
    } while (0)

static double maxabs(const double *v, int n) {
    double m = 0;
    for (int i = 0; i < n; i++) if (fabs(v[i]) > m) m = fabs(v[i]);
    return m;
}

static void check_finite(const char *what, const double *v, int64_t n) {
    for (int64_t i = 0; i < n; i++) if (!isfinite(v[i])) BUG("%s[%lld] = %g is not finite", what, (long long)i, v[i]);
}

static void check_close(const char *what, const double *a, const double *b, int64_t n, double rel) {
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) && isnan(b[i])) continue;
        if (a[i] == b[i]) continue;
        double tol = rel * (1 + fabs(a[i]) + fabs(b[i]));
        if (!(fabs(a[i] - b[i]) <= tol))
            BUG("%s: JIT %.17g, interpreter %.17g at %lld (tol %g)", what, a[i], b[i], (long long)i, tol);
    }
}

static int verbose = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (verbose < 0) verbose = getenv("NFC_FUZZ_VERBOSE") != NULL;
    bytes b = { data, size, 0 };
    gen g;
    memset(&g, 0, sizeof g);
    g.D = 1 + pick(&b, 8);
    g.C = pick(&b, 4) == 0 ? 1 + pick(&b, 3) : 0;
    g.s = scales[pick(&b, 6)];
    uint64_t seed = take(&b);
    int vw = pick(&b, 2);            /* 0: native vector width, 1: scalar */
    int base = pick(&b, 3);
    int logit_in = pick(&b, 6) == 0; /* data in (0, 1), first layer logit */
    double xscale = pick(&b, 2) ? 2 : 1;
    int D = g.D, C = g.C;
    g.M = logit_in ? 1 : 2 * xscale;
    g.Mctx = C ? 2 : 0;
    g.Minv = 20;   /* |z| of a sample at temperature 0.5, normal or logistic */

    str body = { 0 };
    if (logit_in) { put(&body, "  logit\n"); g.M = 3; }  /* inputs in [0.05, 0.95]: |logit| < 3 */
    int graph_form = D >= 2 && !logit_in && pick(&b, 4) == 0;
    if (graph_form) graph(&b, &g, &body);
    int nl = graph_form ? 0 : 1 + pick(&b, 7);
    for (int k = 0; k < nl; k++) {
        if (pick(&b, 6) == 0) {
            int reps = 1 + pick(&b, 3);
            str inner = { 0 };
            gen g0 = g;
            /* a repeat body of one or two layers: bounds applied reps times */
            int nb = 1 + pick(&b, 2);
            size_t at = b.i;
            int same = 1;
            for (int r = 0; r < reps; r++) {
                b.i = at;
                str tmp = { 0 };
                for (int q = 0; q < nb; q++) layer(&b, &g, &tmp, 1);
                if (r == 0) inner = tmp;
                else { same &= tmp.n == inner.n && (!tmp.n || !strcmp(tmp.s, inner.s)); free(tmp.s); }
            }
            if (inner.n && same && g.M <= 1e8) {
                put(&body, "  repeat %d {\n", reps);
                put(&body, "  %s", inner.s);
                put(&body, "  }\n");
            } else {
                g = g0;
            }
            free(inner.s);
        } else {
            layer(&b, &g, &body, 0);
        }
    }
    if (!body.n) put(&body, "  reverse\n");
    if (g.bad) { free(body.s); return 0; }   /* a graph whose bounds are too large: not run */

    str t = { 0 };
    if (g.user_net) put(&t, "net un(h) {\n  dense h tanh\n  residual { dense h elu; dense h }\n  dense out\n}\n");
    put(&t, "flow fz {\n  input x: f64[%d]\n", D);
    if (C) put(&t, "  context c: f64[%d]\n", C);
    static const char *const bases[] = { "normal", "normal(learned)", "logistic" };
    put(&t, "  base %s\n%s}\n", bases[base], body.s);
    free(body.s);
    cur_text = t.s;
    if (verbose) fprintf(stderr, "%s", t.s);

    /* the batch */
    int n = 1 + pick(&b, 4);
    double x[4 * 8], ctx[4 * 3];
    for (int i = 0; i < n * D; i++) x[i] = logit_in ? 0.05 + 0.9 * unit(&b) : xscale * (4 * unit(&b) - 2);
    for (int i = 0; i < n * C; i++) ctx[i] = 4 * unit(&b) - 2;
    const double *cp = C ? ctx : NULL;

    nfc_options o;
    nfc_options_default(&o);
    o.dtype = NFC_F64;
    o.opt_level = 0;
    o.vector_width = vw;
    o.init_seed = seed;
    o.init_scale = g.s;
    nfc_diagnostics *dg = NULL;
    nfc_model *mj = nfc_compile_string("fuzz.flow", t.s, &o, &dg);
    if (!mj) {
        nfc_diagnostics_print(dg, stderr, 0);
        nfc_diagnostics_free(dg);
        BUG("a generated flow does not compile");
    }
    nfc_diagnostics_free(dg);
    o.backend = NFC_BACKEND_INTERP;
    nfc_model *mi = nfc_compile_string("fuzz.flow", t.s, &o, NULL);
    if (!mi) BUG("the flow compiles for the JIT but not for the interpreter");
    if (nfc_param_total(mi) != nfc_param_total(mj) ||
        memcmp(nfc_params(mi), nfc_params(mj), sizeof(double) * (size_t)nfc_param_total(mj)))
        BUG("the two compilations have different parameters");

    /* forward, inverse, log_prob on both backends */
    double z[4 * 8], ld[4], xr[4 * 8], ldi[4], lp[4];
    double zi[4 * 8], ldI[4], xri[4 * 8], ldiI[4], lpi[4];
    if (nfc_forward(mj, n, x, cp, z, ld)) BUG("forward: %s", nfc_last_error(mj));
    if (nfc_inverse(mj, n, z, cp, xr, ldi)) BUG("inverse: %s", nfc_last_error(mj));
    if (nfc_log_prob(mj, n, x, cp, lp)) BUG("log_prob: %s", nfc_last_error(mj));
    if (nfc_forward(mi, n, x, cp, zi, ldI)) BUG("forward (interp): %s", nfc_last_error(mi));
    if (nfc_inverse(mi, n, zi, cp, xri, ldiI)) BUG("inverse (interp): %s", nfc_last_error(mi));
    if (nfc_log_prob(mi, n, x, cp, lpi)) BUG("log_prob (interp): %s", nfc_last_error(mi));
    check_finite("z", z, n * D);
    check_finite("forward logdet", ld, n);
    check_finite("inverse(z)", xr, n * D);
    check_finite("inverse logdet", ldi, n);
    check_finite("log_prob", lp, n);
    check_finite("z (interp)", zi, n * D);
    check_finite("log_prob (interp)", lpi, n);

    /* the Jacobian of the forward transform by central differences, two step sizes */
    double cond_max = 1;
    for (int r = 0; r < n; r++) {
        const double *x0 = x + r * D;
        double X[(1 + 4 * 8) * 8], Cx[(1 + 4 * 8) * 3], Z[(1 + 4 * 8) * 8], L[1 + 4 * 8], h[8];
        int rows = 4 * D;
        for (int j = 0; j < D; j++) h[j] = 1e-4 * (1 + fabs(x0[j]));
        for (int q = 0; q < rows; q++) {
            int j = q / 4, k = q % 4;
            double step = (k < 2 ? h[j] : h[j] / 2) * (k % 2 ? -1 : 1);
            memcpy(X + q * D, x0, sizeof(double) * (size_t)D);
            X[q * D + j] += step;
            if (C) memcpy(Cx + q * C, ctx + r * C, sizeof(double) * (size_t)C);
        }
        if (nfc_forward(mj, rows, X, C ? Cx : NULL, Z, L)) BUG("forward: %s", nfc_last_error(mj));
        double J1[64], J2[64], J[64];
        for (int j = 0; j < D; j++)
            for (int i = 0; i < D; i++) {
                J1[i * D + j] = (Z[(4 * j + 0) * D + i] - Z[(4 * j + 1) * D + i]) / (2 * h[j]);
                J2[i * D + j] = (Z[(4 * j + 2) * D + i] - Z[(4 * j + 3) * D + i]) / h[j];
                J[i * D + j] = J2[i * D + j] + (J2[i * D + j] - J1[i * D + j]) / 3;   /* Richardson */
            }
        double l1, l2, lr, n1, n2, ninv;
        if (lu_logdet(J1, D, &l1, &n1) || lu_logdet(J2, D, &l2, &n2) || lu_logdet(J, D, &lr, &ninv)) continue;
        double jn = 0;
        for (int i = 0; i < D; i++) {
            double s = 0;
            for (int j = 0; j < D; j++) s += fabs(J[i * D + j]);
            if (s > jn) jn = s;
        }
        double cond = jn * ninv;
        if (!(cond >= 1)) cond = 1;
        if (cond > cond_max) cond_max = cond;
        /* A kink (relu in a net, leaky_relu) within a step makes the two step sizes disagree;
         * for a smooth map they agree to O(h^2). Such rows are not checked (the Richardson
         * estimate is then off by up to a multiple of the jump, e.g. log 0.01). */
        int kink = fabs(l1 - l2) > 1e-4 * (1 + fabs(lr));
        double ldtol = 1e-5 * (1 + fabs(lr)) * (cond > 1e3 ? cond / 1e3 : 1) + 10 * fabs(l1 - l2);
        if (!kink && !(fabs(ld[r] - lr) <= ldtol))
            BUG("row %d: forward log|det| %.17g, central differences %.17g (steps h, h/2: %.17g, %.17g; cond %g)", r, ld[r], lr,
                l1, l2, cond);
        if (cond <= 1e10) {
            double tol = 1e-8 * (1 + maxabs(x0, D) + maxabs(z + r * D, D)) * cond;
            for (int j = 0; j < D; j++)
                if (!(fabs(xr[r * D + j] - x0[j]) <= tol))
                    BUG("row %d: inverse(forward(x))[%d] = %.17g, x = %.17g (tol %g, cond %g)", r, j, xr[r * D + j], x0[j], tol,
                        cond);
        }
        if (!(fabs(ldi[r] + ld[r]) <= 1e-8 * (1 + fabs(ld[r])) * cond))
            BUG("row %d: inverse log|det| %.17g is not minus forward %.17g", r, ldi[r], ld[r]);
    }

    /* log p(x) = log p_base(z) + log|det| */
    int pm = nfc_param_find(mj, "base.mean"), ps = nfc_param_find(mj, "base.log_scale");
    double bm[8] = { 0 }, bs[8] = { 0 };
    if (base == 1) {
        if (pm < 0 || ps < 0) BUG("normal(learned) without base.mean/base.log_scale");
        nfc_param_get(mj, pm, bm);
        nfc_param_get(mj, ps, bs);
    }
    for (int r = 0; r < n; r++) {
        double want = ld[r];
        for (int j = 0; j < D; j++) {
            double v = z[r * D + j];
            if (base == 2) want += -fabs(v) - 2 * log1p(exp(-fabs(v)));
            else {
                double u = (v - bm[j]) * exp(-bs[j]);
                want += -0.5 * u * u - bs[j] - 0.5 * log(2 * M_PI);
            }
        }
        if (!(fabs(lp[r] - want) <= 1e-9 * (1 + fabs(want))))
            BUG("row %d: log_prob %.17g, log p_base(z) + log|det| = %.17g", r, lp[r], want);
    }

    /* JIT against the interpreter */
    double rel = 1e-9 * cond_max;
    check_close("forward z", z, zi, n * D, rel);
    check_close("forward logdet", ld, ldI, n, rel);
    check_close("inverse x", xr, xri, n * D, rel);
    check_close("inverse logdet", ldi, ldiI, n, rel);
    check_close("log_prob", lp, lpi, n, rel);
    double sx[4 * 8], slp[4], sxi[4 * 8], slpi[4];
    if (nfc_sample(mj, n, seed, 0.5, cp, sx, slp)) BUG("sample: %s", nfc_last_error(mj));
    if (nfc_sample(mi, n, seed, 0.5, cp, sxi, slpi)) BUG("sample (interp): %s", nfc_last_error(mi));
    /* Samples come from the base's tails (logistic ones are heavy), which a flow with exp
     * scaling may map past the range of doubles; the interpreter then overflows too (found
     * by fuzz-smoke: logit, glow_step scaling=exp, a logistic base). A non-finite JIT sample
     * is a finding where the interpreter's is finite (check_close below also catches it). */
    if (!g.any_sigmoid && g.Minv <= 1e100) {
        for (int q = 0; q < n * D; q++)
            if (!isfinite(sx[q]) && isfinite(sxi[q])) BUG("sample[%d] = %g is not finite (interpreter %g)", q, sx[q], sxi[q]);
        for (int q = 0; q < n; q++)
            if (!isfinite(slp[q]) && isfinite(slpi[q])) BUG("sample log p[%d] = %g is not finite (interpreter %g)", q, slp[q], slpi[q]);
    }
    check_close("sample x", sx, sxi, n * D, rel > 1e-7 ? rel : 1e-7);
    check_close("sample log p", slp, slpi, n, rel > 1e-7 ? rel : 1e-7);

    nfc_free(mj);
    nfc_free(mi);
    free(t.s);
    cur_text = NULL;
    return 0;
}

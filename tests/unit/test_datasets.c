/* tests/unit/test_datasets.c: the toy data sets and their exact log-densities
 * (runtime/datasets.h).
 *
 * Input: none. Output: one "PASS name" / "FAIL name" line per test (tests/t.h).
 *
 * The definitions under test (see the banner of runtime/datasets.c), written out again here
 * so that the independent references below use them:
 *   moons       arcs (-1 + 2cos t, -0.5 + 2sin t) and (1 - 2cos t, 0.5 - 2sin t), t ~ U[0, pi],
 *               1/2 each, noise N(0, 0.1^2 I)
 *   circles     radii 3 and 1.5 about 0, angle ~ U[0, 2pi], 1/2 each, noise N(0, 0.1^2 I)
 *   2spirals    +-(-t cos t, t sin t)/3, t = 3pi sqrt(u) (density 2t/(3pi)^2), 1/2 each,
 *               noise N(0, 0.1^2 I)
 *   8gaussians  N(2 sqrt2 (cos, sin)(k pi/4), (sqrt2/4)^2 I), k = 0..7, 1/8 each
 *   pinwheel    x = 2 R(-a) f, f = (1 + 0.3 z0, 0.1 z1), a = 2 pi k/5 + 0.25 exp(|f|), 1/5 per arm;
 *               p(x) = 1/20 sum_k N(f_k; (1, 0), diag(0.3^2, 0.1^2)), f_k = R(a_k(|x|/2)) x/2
 *   checkerboard  1/32 on [-4,4)^2 where floor(x/2) + floor(y/2) is even, else 0
 *   gmm         8 components N(mu_k, diag s_k^2), 1/8 each, parameters from rt_ds_gmm_params
 *
 * Checks, per 2-D set: the density integrates to 1 on a midpoint grid over [-6, 6]^2 (h = 0.05,
 * aligned with the checkerboard); samples match the grid's mean and second moments (5 standard
 * errors) and its probabilities of 0.5 x 0.5 bins (chi-square); the sampler's log-density
 * output equals rt_ds_log_density bit for bit; samples depend only on (seed, i). The curve
 * integrals are checked against an independent composite Simpson rule and under refinement
 * (|delta log p| < 1e-9). The pinwheel map's Jacobian determinant is checked by central
 * differences. gmm in 5 dimensions: log p against a direct formula, moments against the closed
 * form, normalization by importance sampling, and E_p[log p] by Monte Carlo against a
 * self-normalized importance-sampling estimate.
 */
#include "datasets.h"
#include "t.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PI 3.14159265358979323846

/* DS_VERBOSE=1 in the environment prints the measured margins */
static void note(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static void note(const char *fmt, ...) {
    if (!getenv("DS_VERBOSE")) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("    note: ", stdout);
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
}

/* ---- a small RNG of the test's own (for proposals and test points) ---- */
static uint64_t trng_state = 0x1234567ULL;
static uint64_t trng_u64(void) {
    uint64_t z = (trng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static double trng_unif(void) { return ((double)(trng_u64() >> 11) + 0.5) * 0x1p-53; }
static double trng_normal(void) { return sqrt(-2 * log(trng_unif())) * cos(2 * PI * trng_unif()); }

/* ---- the grid ---- */
#define GL 6.0
#define GN 240                 /* cells per side: h = 0.05 */
#define GH (2 * GL / GN)

static double *grid_points(void) {
    double *x = malloc(sizeof(double) * 2 * GN * GN);
    for (int i = 0; i < GN; i++)
        for (int j = 0; j < GN; j++) {
            x[2 * (i * GN + j)] = -GL + GH * (i + 0.5);
            x[2 * (i * GN + j) + 1] = -GL + GH * (j + 0.5);
        }
    return x;
}

/* ---- 2-D sets: integral, moments, bins, sampler consistency ---- */

#define NS 100000
#define BINS 24                /* 0.5 x 0.5 bins over [-6, 6]^2 */

static void check_2d(const char *name, int gmm_dim, double int_tol) {
    char err[256];
    double *g = grid_points(), *lp = malloc(sizeof(double) * GN * GN);
    CHECK(rt_ds_log_density(name, gmm_dim, GN * GN, g, lp, err, sizeof err) == 0, "%s", err);
    /* integral and moments on the grid */
    double Z = 0, m[5] = { 0 }, bin[BINS][BINS] = { { 0 } };
    for (int k = 0; k < GN * GN; k++) {
        double p = exp(lp[k]) * GH * GH, x = g[2 * k], y = g[2 * k + 1];
        Z += p;
        m[0] += p * x; m[1] += p * y; m[2] += p * x * x; m[3] += p * y * y; m[4] += p * x * y;
        int bi = (k / GN) / (GN / BINS), bj = (k % GN) / (GN / BINS);
        bin[bi][bj] += p;
    }
    CHECK(fabs(Z - 1) <= int_tol, "%s: integral on the grid %.15f (tolerance %g)", name, Z, int_tol);
    /* samples */
    double *s = malloc(sizeof(double) * 2 * NS);
    CHECK(rt_ds_sample(name, gmm_dim, NS, 12345, s, NULL, err, sizeof err) == 0, "%s", err);
    double sm[5] = { 0 }, sq[5] = { 0 };
    static double cnt[BINS][BINS];
    memset(cnt, 0, sizeof cnt);
    double outside = 0;
    for (int i = 0; i < NS; i++) {
        double x = s[2 * i], y = s[2 * i + 1], v[5] = { x, y, x * x, y * y, x * y };
        for (int c = 0; c < 5; c++) { sm[c] += v[c]; sq[c] += v[c] * v[c]; }
        if (fabs(x) < GL && fabs(y) < GL) cnt[(int)floor((x + GL) / 0.5)][(int)floor((y + GL) / 0.5)] += 1;
        else outside += 1;
    }
    static const char *const mname[5] = { "E[x]", "E[y]", "E[x^2]", "E[y^2]", "E[xy]" };
    for (int c = 0; c < 5; c++) {
        double mean = sm[c] / NS, var = sq[c] / NS - mean * mean, se = sqrt(var / NS);
        CHECK(fabs(mean - m[c]) <= 5 * se + 1e-9, "%s: %s of the samples %.6f, of the density %.6f (se %.2g)", name,
              mname[c], mean, m[c], se);
    }
    /* chi-square over the bins with an expected count >= 5; the rest pooled */
    double chi2 = 0, rest_e = NS * (1 - Z), rest_o = outside;
    int df = 0;
    for (int i = 0; i < BINS; i++)
        for (int j = 0; j < BINS; j++) {
            double e = NS * bin[i][j];
            if (e >= 5) { chi2 += (cnt[i][j] - e) * (cnt[i][j] - e) / e; df++; }
            else { rest_e += e; rest_o += cnt[i][j]; }
        }
    if (rest_e >= 5) { chi2 += (rest_o - rest_e) * (rest_o - rest_e) / rest_e; df++; }
    else CHECK(rest_o <= 5 + 5 * sqrt(rest_e + 1), "%s: %.0f samples in bins of expected count %.2f", name, rest_o, rest_e);
    df -= 1;
    double maxz = 0;
    for (int c = 0; c < 5; c++) {
        double mean = sm[c] / NS, se = sqrt((sq[c] / NS - mean * mean) / NS), z = fabs(mean - m[c]) / se;
        if (z > maxz) maxz = z;
    }
    note("%s: integral - 1 = %.2e, largest moment deviation %.2f se, chi-square %.1f / %d df", name, Z - 1, maxz, chi2, df);
    CHECK(chi2 <= df + 5 * sqrt(2.0 * df), "%s: chi-square %.1f over %d degrees of freedom", name, chi2, df);
    /* the sampler's log-density output is rt_ds_log_density at the same points */
    enum { NL = 1000 };
    double xs[2 * NL], l1[NL], l2[NL];
    CHECK(rt_ds_sample(name, gmm_dim, NL, 777, xs, l1, err, sizeof err) == 0, "%s", err);
    CHECK(rt_ds_log_density(name, gmm_dim, NL, xs, l2, err, sizeof err) == 0, "%s", err);
    int same = 1, finite = 1;
    for (int i = 0; i < NL; i++) {
        if (l1[i] != l2[i]) same = 0;
        if (!isfinite(l1[i])) finite = 0;
    }
    CHECK(same, "%s: the sampler's log p differs from rt_ds_log_density", name);
    CHECK(finite, "%s: a sample has a non-finite log p", name);
    /* reproducible, and independent of n */
    double a[2 * 300], b[2 * 1000];
    CHECK(rt_ds_sample(name, gmm_dim, 300, 99, a, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(rt_ds_sample(name, gmm_dim, 1000, 99, b, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(memcmp(a, b, sizeof a) == 0, "%s: the first 300 of 1000 samples differ from 300 samples", name);
    CHECK(rt_ds_sample(name, gmm_dim, 300, 100, b, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(memcmp(a, b, sizeof a) != 0, "%s: seeds 99 and 100 give the same samples", name);
    free(s);
    free(g);
    free(lp);
}

TEST(test_moons) { check_2d("moons", 0, 1e-9); }
TEST(test_circles) { check_2d("circles", 0, 1e-9); }
TEST(test_8gaussians) { check_2d("8gaussians", 0, 1e-9); }
TEST(test_pinwheel) { check_2d("pinwheel", 0, 1e-7); }
TEST(test_2spirals) { check_2d("2spirals", 0, 1e-9); }
TEST(test_checkerboard) { check_2d("checkerboard", 0, 1e-12); }
TEST(test_gmm_2d) { check_2d("gmm", 2, 1e-7); }

/* ---- the curve integrals against an independent reference ---- */

/* the center of curve c of set s at parameter t, and the parameter density */
static void ref_curve(int s, int c, double t, double *x, double *y, double *w) {
    if (s == 0) {
        *x = c ? 1 - 2 * cos(t) : -1 + 2 * cos(t);
        *y = c ? 0.5 - 2 * sin(t) : -0.5 + 2 * sin(t);
        *w = 1 / PI;
    } else if (s == 1) {
        double R = c ? 1.5 : 3;
        *x = R * cos(t); *y = R * sin(t);
        *w = 1 / (2 * PI);
    } else {
        double sg = c ? -1 : 1, T = 3 * PI;
        *x = sg * (-t * cos(t)) / 3; *y = sg * (t * sin(t)) / 3;
        *w = 2 * t / (T * T);
    }
}

/* log p by composite Simpson with 2^17 intervals per curve, Richardson-extrapolated with the
 * 2^16-interval rule on the same nodes (error O(h^6)), shifted by the largest exponent */
static double ref_logp(int s, double px, double py) {
    enum { N = 1 << 17 };
    double tmax = s == 0 ? PI : s == 1 ? 2 * PI : 3 * PI, h = tmax / N;
    static double e[2][N + 1], wv[2][N + 1];
    double M = -INFINITY;
    for (int c = 0; c < 2; c++)
        for (int i = 0; i <= N; i++) {
            double x, y, w;
            ref_curve(s, c, i * h, &x, &y, &w);
            e[c][i] = -((px - x) * (px - x) + (py - y) * (py - y)) / (2 * 0.01);
            wv[c][i] = w;
            if (e[c][i] > M) M = e[c][i];
        }
    double S1 = 0, S2 = 0;
    for (int c = 0; c < 2; c++)
        for (int i = 0; i <= N; i++) {
            double v = 0.5 * wv[c][i] * exp(e[c][i] - M);
            S1 += v * (i == 0 || i == N ? 1 : i % 2 ? 4 : 2) * h / 3;
            if (i % 2 == 0) S2 += v * (i == 0 || i == N ? 1 : i % 4 ? 4 : 2) * 2 * h / 3;
        }
    return M + log(S1 + (S1 - S2) / 15) - log(2 * PI * 0.01);
}

TEST(test_quadrature) {
    static const char *const names[3] = { "moons", "circles", "2spirals" };
    static const double pts[][2] = { { 0, 0 },      { 1, 0.3 },    { -1, 1.5 },   { 2.95, 0.05 }, { -3.05, -0.5 },
                                     { 1.0, -1.6 }, { 0.02, 0.01 }, { 3.5, -1.0 }, { -2.2, 2.4 },  { 5.5, -5.5 },
                                     /* beyond the ends of the moons and of the spirals: the
                                      * integrand is a steep exponential at an end point */
                                     { -5.0, -3.0 }, { 4.5, 2.0 },  { 4.0, -1.5 },  { -0.6, -0.4 } };
    enum { NP = sizeof pts / sizeof pts[0] };
    char err[256];
    for (int s = 0; s < 3; s++) {
        double x[2 * NP], l0[NP], l1[NP], l2[NP];
        for (int i = 0; i < NP; i++) { x[2 * i] = pts[i][0]; x[2 * i + 1] = pts[i][1]; }
        CHECK(rt_ds_log_density(names[s], 0, NP, x, l0, err, sizeof err) == 0, "%s", err);
        CHECK(rt_ds_log_density_refined(names[s], 0, NP, x, l1, 1, err, sizeof err) == 0, "%s", err);
        CHECK(rt_ds_log_density_refined(names[s], 0, NP, x, l2, 2, err, sizeof err) == 0, "%s", err);
        double dref = 0, dfine = 0;
        for (int i = 0; i < NP; i++) {
            double r = ref_logp(s, pts[i][0], pts[i][1]);
            if (fabs(l0[i] - r) > dref) dref = fabs(l0[i] - r);
            if (fabs(l1[i] - l0[i]) > dfine) dfine = fabs(l1[i] - l0[i]);
            if (fabs(l2[i] - l0[i]) > dfine) dfine = fabs(l2[i] - l0[i]);
            /* |delta log p| bounds the relative error of p; far out, log p itself is large and
             * the rounding of the exponent alone is about 1e-16 |log p| */
            double tol = 1e-9 + 4e-16 * fabs(r);
            CHECK(fabs(l0[i] - r) <= tol, "%s at (%g, %g): log p %.15f, Simpson %.15f", names[s], pts[i][0],
                  pts[i][1], l0[i], r);
            CHECK(fabs(l1[i] - l0[i]) <= tol && fabs(l2[i] - l0[i]) <= tol,
                  "%s at (%g, %g): refined %.15f %.15f vs %.15f", names[s], pts[i][0], pts[i][1], l1[i], l2[i], l0[i]);
        }
        note("%s: max |log p - Simpson| %.2e, max |log p - refined| %.2e over %d points", names[s], dref, dfine, NP);
        /* far away: finite, and about -d^2 / (2 sigma^2) */
        double far[2] = { 300, -400 }, lf;
        CHECK(rt_ds_log_density(names[s], 0, 1, far, &lf, err, sizeof err) == 0, "%s", err);
        CHECK(isfinite(lf) && lf < -0.9 * 495.0 * 495.0 / 0.02 && lf > -1.1 * 505.0 * 505.0 / 0.02, "%s far: %g",
              names[s], lf);
    }
}

/* ---- pinwheel: the map has Jacobian determinant 4 (2^2 times a rigid twist) ---- */

static void pw_forward(int k, double f0, double f1, double *x, double *y) {
    double a = 2 * PI * k / 5 + 0.25 * exp(sqrt(f0 * f0 + f1 * f1));
    *x = 2 * (f0 * cos(a) + f1 * sin(a));
    *y = 2 * (-f0 * sin(a) + f1 * cos(a));
}

TEST(test_pinwheel_map) {
    char err[256];
    for (int i = 0; i < 200; i++) {
        int k = i % 5;
        double f0 = 1 + 0.6 * trng_normal(), f1 = 0.3 * trng_normal(), hh = 1e-6;
        double xp, yp, xm, ym, j00, j01, j10, j11;
        pw_forward(k, f0 + hh, f1, &xp, &yp);
        pw_forward(k, f0 - hh, f1, &xm, &ym);
        j00 = (xp - xm) / (2 * hh); j10 = (yp - ym) / (2 * hh);
        pw_forward(k, f0, f1 + hh, &xp, &yp);
        pw_forward(k, f0, f1 - hh, &xm, &ym);
        j01 = (xp - xm) / (2 * hh); j11 = (yp - ym) / (2 * hh);
        double det = j00 * j11 - j01 * j10;
        CHECK(fabs(det - 4) < 1e-6 * (1 + fabs(j00) + fabs(j01) + fabs(j10) + fabs(j11)), "det %.12f at f = (%g, %g)",
              det, f0, f1);
        /* the density at the image: at least the arm-k term N(f) / 20, and equal to the sum
         * over the arms of N(R(a_j(r)) x/2) / 20 */
        double x[2], lp;
        pw_forward(k, f0, f1, &x[0], &x[1]);
        CHECK(rt_ds_log_density("pinwheel", 0, 1, x, &lp, err, sizeof err) == 0, "%s", err);
        double zz0 = (f0 - 1) / 0.3, zz1 = f1 / 0.1, c = -log(20.0) - log(2 * PI * 0.3 * 0.1);
        double term = c - 0.5 * (zz0 * zz0 + zz1 * zz1);
        CHECK(lp >= term - 1e-12, "log p %.15g below the arm term %.15g", lp, term);
        double v0 = x[0] / 2, v1 = x[1] / 2, r = sqrt(v0 * v0 + v1 * v1), sum = 0;
        for (int j = 0; j < 5; j++) {
            double a = 2 * PI * j / 5 + 0.25 * exp(r);
            double g0 = cos(a) * v0 - sin(a) * v1, g1 = sin(a) * v0 + cos(a) * v1;
            double y0 = (g0 - 1) / 0.3, y1 = g1 / 0.1;
            sum += exp(c - 0.5 * (y0 * y0 + y1 * y1));
        }
        CHECK(fabs(lp - log(sum)) < 1e-12 * (1 + fabs(lp)), "log p %.15g, formula %.15g", lp, log(sum));
    }
}

/* ---- checkerboard ---- */

TEST(test_checkerboard_support) {
    char err[256];
    static const double in[][2] = { { 0.5, 0.5 }, { -3.9, -3.9 }, { -2.5, 0.5 }, { 3.99, 2.01 }, { 0, 0 }, { -4, -4 } };
    static const double out[][2] = { { -0.5, 0.5 }, { 2.5, 0.5 }, { 4, 0.5 }, { 0.5, 4 }, { -4.01, -3.5 }, { 2, 0 },
                                      { 100, 100 } };
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        double lp;
        CHECK(rt_ds_log_density("checkerboard", 0, 1, in[i], &lp, err, sizeof err) == 0, "%s", err);
        CHECK(lp == -log(32.0), "(%g, %g): %g", in[i][0], in[i][1], lp);
    }
    for (size_t i = 0; i < sizeof out / sizeof out[0]; i++) {
        double lp;
        CHECK(rt_ds_log_density("checkerboard", 0, 1, out[i], &lp, err, sizeof err) == 0, "%s", err);
        CHECK(lp == -INFINITY, "(%g, %g): %g", out[i][0], out[i][1], lp);
    }
    enum { N = 20000 };
    static double x[2 * N], lp[N];
    CHECK(rt_ds_sample("checkerboard", 0, N, 5, x, lp, err, sizeof err) == 0, "%s", err);
    int bad = 0;
    for (int i = 0; i < N; i++)
        if (lp[i] != -log(32.0) || x[2 * i] == floor(x[2 * i]) || x[2 * i + 1] == floor(x[2 * i + 1])) bad++;
    CHECK(bad == 0, "%d samples off the black squares or on an integer line", bad);
}

/* ---- gmm in 5 and 1024 dimensions ---- */

static double gmm_ref_logp(int D, const double *mu, const double *sc, const double *x) {
    double l[RT_DS_GMM_K], m = -INFINITY, s = 0;
    for (int k = 0; k < RT_DS_GMM_K; k++) {
        double v = -log(8.0);
        for (int j = 0; j < D; j++) {
            double z = (x[j] - mu[k * D + j]) / sc[k * D + j];
            v += -0.5 * z * z - log(sc[k * D + j]) - 0.5 * log(2 * PI);
        }
        l[k] = v;
        if (v > m) m = v;
    }
    for (int k = 0; k < RT_DS_GMM_K; k++) s += exp(l[k] - m);
    return m + log(s);
}

TEST(test_gmm_5d) {
    enum { D = 5, N = 200000 };
    char err[256];
    double mu[RT_DS_GMM_K * D], sc[RT_DS_GMM_K * D];
    CHECK(rt_ds_gmm_params(D, mu, sc) == 0);
    double *x = malloc(sizeof(double) * N * D), *lp = malloc(sizeof(double) * N);
    CHECK(rt_ds_sample("gmm", D, N, 2024, x, lp, err, sizeof err) == 0, "%s", err);
    /* log p against the direct formula */
    double maxd = 0;
    for (int i = 0; i < 1000; i++) {
        double d = fabs(lp[i] - gmm_ref_logp(D, mu, sc, x + i * D));
        if (d > maxd) maxd = d;
    }
    CHECK(maxd < 1e-12, "log p differs from the formula by %g", maxd);
    /* moments against the closed form */
    for (int j = 0; j < D; j++) {
        double a = 0, b = 0;
        for (int k = 0; k < RT_DS_GMM_K; k++) {
            a += mu[k * D + j] / 8;
            b += (mu[k * D + j] * mu[k * D + j] + sc[k * D + j] * sc[k * D + j]) / 8;
        }
        double s1 = 0, s2 = 0, q1 = 0, q2 = 0;
        for (int i = 0; i < N; i++) {
            double v = x[i * D + j];
            s1 += v; q1 += v * v; s2 += v * v; q2 += v * v * v * v;
        }
        s1 /= N; s2 /= N;
        double se1 = sqrt((q1 / N - s1 * s1) / N), se2 = sqrt((q2 / N - s2 * s2) / N);
        CHECK(fabs(s1 - a) <= 5 * se1, "dim %d: mean %.5f vs %.5f (se %.2g)", j, s1, a, se1);
        CHECK(fabs(s2 - b) <= 5 * se2, "dim %d: E[x^2] %.5f vs %.5f (se %.2g)", j, s2, b, se2);
    }
    /* Monte Carlo E_p[log p] */
    double hm = 0, hq = 0;
    for (int i = 0; i < N; i++) { hm += lp[i]; hq += lp[i] * lp[i]; }
    hm /= N;
    double se_mc = sqrt((hq / N - hm * hm) / N);
    /* importance sampling from q = the same mixture with every scale 1.5 times larger (so
     * p/q <= 1.5^5): the normalization of p, and a self-normalized estimate of E_p[log p] */
    double *y = x, *ly = lp, *lq = malloc(sizeof(double) * N), qs[RT_DS_GMM_K * D];
    for (int i = 0; i < RT_DS_GMM_K * D; i++) qs[i] = 1.5 * sc[i];
    for (int i = 0; i < N; i++) {
        int k = (int)(trng_u64() >> 61);
        for (int j = 0; j < D; j++) y[i * D + j] = mu[k * D + j] + qs[k * D + j] * trng_normal();
        lq[i] = gmm_ref_logp(D, mu, qs, y + i * D);
    }
    CHECK(rt_ds_log_density("gmm", D, N, y, ly, err, sizeof err) == 0, "%s", err);
    double sw = 0, sw2 = 0, swl = 0;
    for (int i = 0; i < N; i++) {
        double w = exp(ly[i] - lq[i]);
        sw += w; sw2 += w * w; swl += w * ly[i];
    }
    double Z = sw / N, seZ = sqrt((sw2 / N - Z * Z) / N);
    CHECK(fabs(Z - 1) <= 5 * seZ && seZ < 0.01, "importance-sampling integral %.5f (se %.3g)", Z, seZ);
    double hs = swl / sw, v = 0;
    for (int i = 0; i < N; i++) {
        double w = exp(ly[i] - lq[i]);
        v += w * w * (ly[i] - hs) * (ly[i] - hs);
    }
    double se_is = sqrt(v) / sw;
    note("gmm 5-D: importance-sampling integral %.5f (se %.2g); E_p[log p]: Monte Carlo %.5f (se %.2g), "
         "self-normalized IS %.5f (se %.2g)", Z, seZ, hm, se_mc, hs, se_is);
    CHECK(fabs(hm - hs) <= 5 * sqrt(se_mc * se_mc + se_is * se_is), "E_p[log p]: Monte Carlo %.5f (se %.2g), "
          "self-normalized importance sampling %.5f (se %.2g)", hm, se_mc, hs, se_is);
    free(x);
    free(lp);
    free(lq);
}

TEST(test_gmm_1024) {
    enum { D = 1024, N = 64 };
    char err[256];
    double *mu = malloc(sizeof(double) * 8 * D), *sc = malloc(sizeof(double) * 8 * D);
    double *x = malloc(sizeof(double) * N * D), lp[N];
    CHECK(rt_ds_gmm_params(D, mu, sc) == 0);
    CHECK(rt_ds_sample("gmm", D, N, 3, x, lp, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < N; i++) {
        double r = gmm_ref_logp(D, mu, sc, x + i * D);
        CHECK(isfinite(lp[i]) && fabs(lp[i] - r) <= 1e-12 * fabs(r), "sample %d: %.17g vs %.17g", i, lp[i], r);
    }
    /* the first 5 samples of a 5-dim run equal those of another 5-dim run with more samples */
    double a[5 * 5], b[5 * 10];
    CHECK(rt_ds_sample("gmm", 5, 5, 8, a, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(rt_ds_sample("gmm", 5, 10, 8, b, NULL, err, sizeof err) == 0, "%s", err);
    CHECK(memcmp(a, b, sizeof a) == 0);
    free(mu);
    free(sc);
    free(x);
}

/* ---- names, dimensions, errors ---- */

TEST(test_api) {
    int n = 0;
    const char *const *names = rt_ds_names(&n);
    CHECK(n == 7);
    static const char *const want[7] = { "moons", "circles", "8gaussians", "pinwheel", "2spirals", "checkerboard", "gmm" };
    for (int i = 0; i < 7 && i < n; i++) CHECK_STR(names[i], want[i]);
    CHECK(rt_ds_dim("moons", 0) == 2);
    CHECK(rt_ds_dim("checkerboard", 77) == 2);
    CHECK(rt_ds_dim("gmm", 8) == 8);
    CHECK(rt_ds_dim("gmm", 1024) == 1024);
    CHECK(rt_ds_dim("gmm", 1) == -1);
    CHECK(rt_ds_dim("gmm", 1025) == -1);
    CHECK(rt_ds_dim("mons", 0) == -1);
    CHECK(rt_ds_dim(NULL, 0) == -1);
    char err[256];
    double x[4] = { 0, 0, 0, 0 }, lp[2];
    CHECK(rt_ds_sample("mons", 0, 2, 0, x, lp, err, sizeof err) == -1);
    CHECK(strstr(err, "unknown data set 'mons'") != NULL, "%s", err);
    CHECK(rt_ds_sample("gmm", 1, 1, 0, x, lp, err, sizeof err) == -1);
    CHECK(strstr(err, "dimension") != NULL, "%s", err);
    CHECK(rt_ds_sample("moons", 0, -1, 0, x, lp, err, sizeof err) == -1);
    CHECK(rt_ds_sample("moons", 0, 0, 0, NULL, NULL, err, sizeof err) == 0);
    CHECK(rt_ds_log_density("moons", 0, 1, NULL, lp, err, sizeof err) == -1);
    x[1] = NAN;
    CHECK(rt_ds_log_density("circles", 0, 2, x, lp, err, sizeof err) == -1);
    CHECK(strstr(err, "point 0, coordinate 1 is not finite") != NULL, "%s", err);
    x[1] = 0;
    CHECK(rt_ds_log_density_refined("moons", 0, 1, x, lp, 5, err, sizeof err) == -1);
    CHECK(rt_ds_gmm_params(1, x, x) == -1);
    /* pinned first samples (seed 0): the counter-based streams must not change. The
     * tolerance allows only for last-bit differences of libm (log, cos, sin, exp). */
    static const struct { const char *name; int dim; double x[4]; } pin[] = {
        { "moons", 2, { 0.82345135738228858, 0.46545387581328168 } },
        { "circles", 2, { 1.3183699230529147, 2.6245254627944257 } },
        { "8gaussians", 2, { -1.487350428037723, 2.3957601982611636 } },
        { "pinwheel", 2, { -2.705830758804133, 0.98258463259302886 } },
        { "2spirals", 2, { 0.96785259726834194, -1.2318742492230914 } },
        { "checkerboard", 2, { -1.6264097581012855, 2.2092653968823264 } },
        { "gmm", 4, { -0.53304654712857169, -0.74429113159988358, -0.97976574185835452, 2.0671860046234785 } },
    };
    for (size_t i = 0; i < sizeof pin / sizeof pin[0]; i++) {
        double s[4];
        CHECK(rt_ds_sample(pin[i].name, pin[i].dim, 1, 0, s, NULL, err, sizeof err) == 0, "%s", err);
        for (int j = 0; j < pin[i].dim; j++)
            CHECK(fabs(s[j] - pin[i].x[j]) <= 1e-13 * (1 + fabs(pin[i].x[j])), "%s: coordinate %d is %.17g, pinned %.17g",
                  pin[i].name, j, s[j], pin[i].x[j]);
    }
}

int main(void) {
    RUN(test_api);
    RUN(test_moons);
    RUN(test_circles);
    RUN(test_8gaussians);
    RUN(test_pinwheel);
    RUN(test_2spirals);
    RUN(test_checkerboard);
    RUN(test_gmm_2d);
    RUN(test_quadrature);
    RUN(test_pinwheel_map);
    RUN(test_checkerboard_support);
    RUN(test_gmm_5d);
    RUN(test_gmm_1024);
    return t_done();
}

/* runtime/datasets.c: the standard 2-D toy data sets and a Gaussian mixture, with exact
 * log-densities (API and conventions: datasets.h).
 *
 * Input:  a name, a count and a seed, or points. Output: samples and/or log p(x) (nats).
 *
 * ---- Random numbers (counter-based) ----
 * mix(z) is the splitmix64 finalizer. Sample i of seed s owns the stream
 *     key_i = mix(mix(s ^ 0x6a09e667f3bcc909) + i * 0x9e3779b97f4a7c15),
 *     v_j   = mix(key_i + (j + 1) * 0xd1b54a32d192ed03),   j = 0, 1, 2, ...
 * so it depends only on (s, i). A uniform is u = ((v >> 11) + 0.5) 2^-53, in (0, 1); a pair
 * of standard normals is Box-Muller on two uniforms: sqrt(-2 log u1) (cos, sin)(2 pi u2).
 * The draws of one sample are taken in the order written below.
 *
 * ---- The data sets (N(x; m, s^2 I) is the isotropic normal density) ----
 * moons       Two half circles of radius 2 (scikit-learn's make_moons scaled by 2 and centred,
 *             x = 2 (m - (0.5, 0.25)), so the mean is 0), each with probability 1/2:
 *               upper  c(t) = (-1 + 2 cos t, -0.5 + 2 sin t),  t in [0, pi]
 *               lower  c(t) = ( 1 - 2 cos t,  0.5 - 2 sin t),  t in [0, pi]
 *             t uniform on [0, pi], plus noise N(0, 0.1^2 I). Draws: u (u < 1/2: upper),
 *             u (t = pi u), normal pair.
 *             p(x) = sum over the 2 arcs of 1/2 int_0^pi (1/pi) N(x; c(t), 0.1^2 I) dt.
 * circles     Two concentric circles, radii 3 and 1.5 (scikit-learn's make_circles with
 *             factor 0.5, scaled by 3), each with probability 1/2, angle t uniform on
 *             [0, 2 pi], noise N(0, 0.1^2 I). Draws: u (u < 1/2: radius 3), u (t = 2 pi u),
 *             normal pair. p(x) = sum over the 2 circles of 1/2 int (1/2pi) N(x; c(t), .01 I) dt.
 * 2spirals    Two arms c(t) = +-(-t cos t, t sin t) / 3, t in [0, T], T = 3 pi (540 degrees),
 *             each with probability 1/2; t = T sqrt(u), so t has the density 2 t / T^2; noise
 *             N(0, 0.1^2 I). Draws: u (u < 1/2: the + arm), u, normal pair.
 *             p(x) = sum over the 2 arms of 1/2 int_0^T (2 t / T^2) N(x; c(t), 0.1^2 I) dt.
 *             (The usual code also adds uniform jitter before the Gaussian noise; this set
 *             has only the Gaussian noise.)
 * 8gaussians  Eight components N(mu_k, s^2 I), mu_k = 2 sqrt(2) (cos, sin)(k pi / 4),
 *             s = sqrt(2) / 4, k = 0..7 with probability 1/8 each (the FFJORD set: centres
 *             at radius 4/sqrt 2, noise 0.5/sqrt 2). Draws: u (k = floor(8 u)), normal pair.
 *             p(x) = 1/8 sum_k N(x; mu_k, s^2 I).
 * pinwheel    Five arms k = 0..4 with probability 1/5: f = (1 + 0.3 z0, 0.1 z1) with z
 *             standard normal, r = |f|, a = 2 pi k / 5 + 0.25 exp(r), and
 *                 x = 2 R(-a) f = 2 (f0 cos a + f1 sin a, -f0 sin a + f1 cos a).
 *             Draws: u (k = floor(5 u)), normal pair (z0, z1). This is the SVAE/FFJORD
 *             pinwheel (radial std 0.3, tangential std 0.1, rate 0.25, scale 2) except that the
 *             angle grows with r = |f| instead of f0: the map f -> R(-a(|f|)) f then turns each
 *             circle |f| = r rigidly, so it is a bijection of the plane with Jacobian
 *             determinant 1 (the usual f0 version folds over in its far tails). Inverse per
 *             arm: v = x / 2, f = R(a_k(|v|)) v, so
 *                 p(x) = 1/4 * 1/5 sum_k N(f_k0; 1, 0.3^2) N(f_k1; 0, 0.1^2).
 *             (For |x| beyond about 60, 0.25 exp(|x|/2) is no longer resolved to a fraction of
 *             a turn in double precision; the density there is below e^-40000.)
 * checkerboard  Uniform on the 8 black squares of the 4x4 board of 2x2 squares over
 *             [-4, 4)^2: a point is black when floor(x/2) + floor(y/2) is even (so [0,2)^2 is
 *             black). log p = log(1/32) on black squares, -INFINITY elsewhere. Draws: v (the
 *             top 3 bits choose the square: column i = bits >> 1, row j = (i & 1) + 2 (bits & 1)),
 *             then two uniforms on a 2^-48 grid, u = (floor(v / 2^16) + 0.5) 2^-48, so that
 *             x = -4 + 2 i + 2 u is exact and strictly inside its square.
 * gmm         D dimensions (2..1024), K = 8 components with probability 1/8 each,
 *             N(mu_k, diag(s_k^2)). Parameters: the stream of sample k of seed 0x676d6d
 *             ("gmm") gives, for j = 0..D-1 in turn, uniforms u, u' and
 *                 mu_kj = (4.5 / sqrt(D)) (2 u - 1),   s_kj = 0.3 + 0.3 u'
 *             (so the distance between two means is about 3.7 in every D: the components
 *             overlap a little). Draws: v (k = v >> 61), then D normals (Box-Muller pairs, the
 *             second of the last pair unused for odd D). p(x) = 1/8 sum_k prod_j N(x_j; mu, s^2).
 *
 * ---- The curve integrals (moons, circles, 2spirals) ----
 * p(x) = sum_c pi_c int w_c(t) N(x; c(t), s^2 I) dt is a 1-D integral of a smooth function.
 * Each curve is cut into base panels of arc length about 2 s (equal in t for the circles,
 * equal in arc length for the spirals); each panel has its midpoint m and a bound rho on the
 * distance from m to any point of the panel (its half arc length), so the integrand on the
 * panel is at most pi_c max(w) exp(-max(0, |x - m| - rho)^2 / (2 s^2)). Per point: the panel
 * with the smallest such distance bound is integrated first, then every panel whose bound
 * times its width could add more than 1e-17 of the running total. A panel is integrated by
 * adaptive Gauss-Kronrod (7/15 points), splitting while |K15 - G7| exceeds 1e-9 of the running
 * total (or the rounding level). |K15 - G7| estimates the error of G7; the K15 value kept is
 * far more accurate: measured against 8x finer panels and a 10^6 times tighter tolerance, the
 * log-densities agree to 1e-12 even with a 1e-6 tolerance here. Sums are kept as (log scale, mantissa) pairs, each piece scaled
 * by its own largest term, so nothing under- or overflows at any distance. The test checks
 * the result against independent brute-force quadrature and under refinement (1e-9 relative).
 */
#include "datasets.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DS_PI 3.14159265358979323846
#define DS_LOG_2PI 1.83787706640934548356

static void ds_err(char *err, size_t errlen, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void ds_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- counter-based random numbers ---- */

typedef struct { uint64_t key, ctr; } ds_rng;

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static ds_rng rng_at(uint64_t seed, uint64_t i) {
    ds_rng r;
    r.key = mix64(mix64(seed ^ 0x6a09e667f3bcc909ULL) + i * 0x9e3779b97f4a7c15ULL);
    r.ctr = 0;
    return r;
}

static uint64_t rng_u64(ds_rng *r) { return mix64(r->key + (++r->ctr) * 0xd1b54a32d192ed03ULL); }

static double rng_unif(ds_rng *r) { return ((double)(rng_u64(r) >> 11) + 0.5) * 0x1p-53; }

static void rng_normal2(ds_rng *r, double *z0, double *z1) {
    double u1 = rng_unif(r), u2 = rng_unif(r);
    double rad = sqrt(-2.0 * log(u1)), th = 2.0 * DS_PI * u2;
    *z0 = rad * cos(th);
    *z1 = rad * sin(th);
}

/* ---- the table of data sets ---- */

enum { DS_MOONS, DS_CIRCLES, DS_8GAUSS, DS_PINWHEEL, DS_SPIRALS, DS_CHECKER, DS_GMM, DS_COUNT };
static const char *const ds_names[DS_COUNT] = { "moons", "circles", "8gaussians", "pinwheel",
                                                "2spirals", "checkerboard", "gmm" };

const char *const *rt_ds_names(int *count) {
    if (count) *count = DS_COUNT;
    return ds_names;
}

static int ds_find(const char *name) {
    if (!name) return -1;
    for (int i = 0; i < DS_COUNT; i++)
        if (!strcmp(name, ds_names[i])) return i;
    return -1;
}

int rt_ds_dim(const char *name, int gmm_dim) {
    int id = ds_find(name);
    if (id < 0) return -1;
    if (id != DS_GMM) return 2;
    return gmm_dim >= RT_DS_GMM_MIN_DIM && gmm_dim <= RT_DS_GMM_MAX_DIM ? gmm_dim : -1;
}

/* ---- curves: circular arcs and spiral arms ---- */

#define CURVE_SIGMA 0.1
#define SPIRAL_T (3.0 * DS_PI)

typedef struct {
    int    spiral;     /* 0: arc c(t) = (cx, cy) + dir R (cos t, sin t); 1: c(t) = dir (-t cos t, t sin t) / 3 */
    double cx, cy, R, dir;
    double t0, t1;     /* parameter range */
    double weight;     /* probability of the curve */
} ds_curve;

static const ds_curve moons_curves[2] = {
    { 0, -1.0, -0.5, 2.0, 1.0, 0.0, DS_PI, 0.5 },
    { 0, 1.0, 0.5, 2.0, -1.0, 0.0, DS_PI, 0.5 },
};
static const ds_curve circles_curves[2] = {
    { 0, 0.0, 0.0, 3.0, 1.0, 0.0, 2.0 * DS_PI, 0.5 },
    { 0, 0.0, 0.0, 1.5, 1.0, 0.0, 2.0 * DS_PI, 0.5 },
};
static const ds_curve spiral_curves[2] = {
    { 1, 0.0, 0.0, 0.0, 1.0, 0.0, SPIRAL_T, 0.5 },
    { 1, 0.0, 0.0, 0.0, -1.0, 0.0, SPIRAL_T, 0.5 },
};

static void curve_point(const ds_curve *c, double t, double *x, double *y) {
    if (c->spiral) {
        *x = c->dir * (-t * cos(t)) / 3.0;
        *y = c->dir * (t * sin(t)) / 3.0;
    } else {
        *x = c->cx + c->dir * c->R * cos(t);
        *y = c->cy + c->dir * c->R * sin(t);
    }
}

/* the density of the parameter t */
static double curve_w(const ds_curve *c, double t) {
    if (c->spiral) return 2.0 * t / (SPIRAL_T * SPIRAL_T);
    return 1.0 / (c->t1 - c->t0);
}

/* the parameter from a uniform u in (0, 1) */
static double curve_t(const ds_curve *c, double u) {
    if (c->spiral) return SPIRAL_T * sqrt(u);
    return c->t0 + (c->t1 - c->t0) * u;
}

/* spiral arc length from 0 to t: int_0^t sqrt(1 + s^2) / 3 ds */
static double spiral_arclen(double t) { return (t * sqrt(1.0 + t * t) + asinh(t)) / 6.0; }

/* ---- Gauss-Kronrod 7/15 (QUADPACK's qk15 constants) ---- */

static const double gk_x[8] = {
    0.991455371120812639206854697526329, 0.949107912342758524526189684047851,
    0.864864423359769072789712788640926, 0.741531185599394439863864773280788,
    0.586087235467691130294144845693013, 0.405845151377397166906606412076961,
    0.207784955007898467600689403773245, 0.0 };
/* node j = 0..14 at abscissa xi_j in [-1, 1] (xi_j = -xi_{14-j}), its Kronrod weight and its
 * Gauss weight (0 for the Kronrod-only nodes, the even j) */
static double gk_xi(int j) { return j < 7 ? -gk_x[j] : j == 7 ? 0.0 : gk_x[14 - j]; }
static const double gk_kw[15] = {
    0.022935322010529224963732008058970, 0.063092092629978553290700663189204,
    0.104790010322250183839876322541518, 0.140653259715525918745189590510238,
    0.169004726639267902826583426598550, 0.190350578064785409913256402421014,
    0.204432940075298892414161999234649, 0.209482141084727828012999174891714,
    0.204432940075298892414161999234649, 0.190350578064785409913256402421014,
    0.169004726639267902826583426598550, 0.140653259715525918745189590510238,
    0.104790010322250183839876322541518, 0.063092092629978553290700663189204,
    0.022935322010529224963732008058970 };
static const double gk_gw[15] = {
    0, 0.129484966168869693270611432679082, 0, 0.279705391489276667901467771423780,
    0, 0.381830050505118944950369775488975, 0, 0.417959183673469387755102040816327,
    0, 0.381830050505118944950369775488975, 0, 0.279705391489276667901467771423780,
    0, 0.129484966168869693270611432679082, 0 };

/* ---- the curve-set integrator ---- */

typedef struct {
    int    curve;
    double a, b;            /* parameter range */
    double mx, my, rho;     /* curve point at the middle; bound on the distance to the panel */
    double logbound;        /* log(weight * max w * (b - a)) */
    double px[15], py[15];  /* the curve at the K15 nodes */
    double pw[15];          /* weight * w(t) * (b - a) / 2 at the nodes */
} ds_panel;

typedef struct {
    const ds_curve *curves;
    int             ncurves;
    double          sigma;
    double          eps;    /* tolerance on |K15 - G7|, relative to the total */
    ds_panel       *p;
    int             np;
    double         *mr;     /* per panel: mx, my, rho (copied, compact for the scan) */
    double         *lb;     /* scratch: per-panel distance lower bound */
} ds_cset;

/* a sum kept as S * exp(M) */
typedef struct { double M, S; } ds_lsum;

static void lsum_add(ds_lsum *a, double m, double v) {
    if (!(v > 0)) return;
    if (m > a->M) {
        a->S = a->S * exp(a->M - m) + v;
        a->M = m;
    } else {
        a->S += v * exp(m - a->M);
    }
}

static double lsum_log(const ds_lsum *a) { return a->S > 0 ? a->M + log(a->S) : -INFINITY; }

static void panel_nodes(const ds_curve *c, double a, double b, double *px, double *py, double *pw) {
    double mid = 0.5 * (a + b), half = 0.5 * (b - a);
    for (int j = 0; j < 15; j++) {
        double t = mid + half * gk_xi(j);
        curve_point(c, t, &px[j], &py[j]);
        pw[j] = c->weight * curve_w(c, t) * half;
    }
}

static int cset_init(ds_cset *cs, const ds_curve *curves, int nc, int refine, char *err, size_t errlen) {
    memset(cs, 0, sizeof *cs);
    cs->curves = curves;
    cs->ncurves = nc;
    cs->sigma = CURVE_SIGMA;
    cs->eps = 1e-9 * pow(1e-2, refine);
    double h = 2.0 * CURVE_SIGMA / (double)(1 << refine);   /* target arc length of a panel */
    int counts[8], total = 0;
    for (int c = 0; c < nc; c++) {
        const ds_curve *cv = &curves[c];
        double len = cv->spiral ? spiral_arclen(cv->t1) - spiral_arclen(cv->t0) : cv->R * (cv->t1 - cv->t0);
        counts[c] = (int)ceil(len / h);
        total += counts[c];
    }
    cs->p = malloc(sizeof(ds_panel) * (size_t)total);
    cs->lb = malloc(sizeof(double) * (size_t)total);
    cs->mr = malloc(sizeof(double) * 3 * (size_t)total);
    if (!cs->p || !cs->lb || !cs->mr) {
        free(cs->p);
        free(cs->lb);
        free(cs->mr);
        ds_err(err, errlen, "out of memory");
        return -1;
    }
    int k = 0;
    for (int c = 0; c < nc; c++) {
        const ds_curve *cv = &curves[c];
        int n = counts[c];
        double s0 = cv->spiral ? spiral_arclen(cv->t0) : 0, s1 = cv->spiral ? spiral_arclen(cv->t1) : 0;
        double a = cv->t0;
        for (int i = 0; i < n; i++, k++) {
            double b;
            if (i == n - 1) b = cv->t1;
            else if (!cv->spiral) b = cv->t0 + (cv->t1 - cv->t0) * (double)(i + 1) / n;
            else {
                /* Newton for spiral_arclen(b) = target, from the previous breakpoint */
                double target = s0 + (s1 - s0) * (double)(i + 1) / n;
                b = a + (target - spiral_arclen(a)) * 3.0 / sqrt(1.0 + a * a);
                for (int it = 0; it < 60; it++) {
                    double d = (spiral_arclen(b) - target) * 3.0 / sqrt(1.0 + b * b);
                    b -= d;
                    if (fabs(d) <= 1e-15 * (1.0 + b)) break;
                }
            }
            ds_panel *p = &cs->p[k];
            p->curve = c;
            p->a = a;
            p->b = b;
            curve_point(cv, 0.5 * (a + b), &p->mx, &p->my);
            double speed = cv->spiral ? sqrt(1.0 + b * b) / 3.0 : cv->R;   /* max over the panel */
            p->rho = 0.5 * (b - a) * speed * (1.0 + 1e-12) + 1e-12;
            double wmax = cv->spiral ? curve_w(cv, b) : curve_w(cv, a);
            p->logbound = log(cv->weight * wmax * (b - a));
            panel_nodes(cv, a, b, p->px, p->py, p->pw);
            cs->mr[3 * k] = p->mx;
            cs->mr[3 * k + 1] = p->my;
            cs->mr[3 * k + 2] = p->rho;
            a = b;
        }
    }
    cs->np = total;
    return 0;
}

static void cset_free(ds_cset *cs) {
    free(cs->p);
    free(cs->mr);
    free(cs->lb);
}

/* Integrate piece [a, b] of panel pn into acc; px/py/pw: the K15 nodes of the piece. logref:
 * log of a reference total, used when larger than acc's current value. *budget: pieces left
 * (a guard; never reached in practice). */
static void integrate_piece(const ds_cset *cs, const ds_panel *pn, double a, double b, const double *px,
                            const double *py, const double *pw, double x, double y, int depth, double logref,
                            int *budget, ds_lsum *acc) {
    double e[15], m = -INFINITY, emax = 0, inv2s2 = 0.5 / (cs->sigma * cs->sigma);
    for (int j = 0; j < 15; j++) {
        double dx = x - px[j], dy = y - py[j];
        e[j] = -(dx * dx + dy * dy) * inv2s2;
        if (e[j] > m) m = e[j];
        if (-e[j] > emax) emax = -e[j];
    }
    double K = 0, G = 0;
    for (int j = 0; j < 15; j++) {
        double v = pw[j] * exp(e[j] - m);
        K += gk_kw[j] * v;
        G += gk_gw[j] * v;
    }
    --*budget;
    double diff = fabs(K - G);
    /* the reference total relative to exp(m) */
    double ref = acc->S > 0 ? acc->S * exp(acc->M - m) : 0, r2 = exp(logref - m);
    if (r2 > ref) ref = r2;
    /* Accept when the error estimate of G7 (the K15 value kept is far more accurate) is below
     * eps * total, or at the level of rounding: exp(e) carries a relative error of about
     * |e| * DBL_EPSILON from the rounding of e itself. */
    int ok = depth >= 40 || *budget <= 0 || !(K > 0) || diff <= (64.0 + 4.0 * emax) * DBL_EPSILON * K ||
             diff <= cs->eps * ref;
    if (ok) {
        lsum_add(acc, m, K);
        return;
    }
    const ds_curve *cv = &cs->curves[pn->curve];
    double mid = 0.5 * (a + b);
    double qx[15], qy[15], qw[15];
    panel_nodes(cv, a, mid, qx, qy, qw);
    integrate_piece(cs, pn, a, mid, qx, qy, qw, x, y, depth + 1, logref, budget, acc);
    panel_nodes(cv, mid, b, qx, qy, qw);
    integrate_piece(cs, pn, mid, b, qx, qy, qw, x, y, depth + 1, logref, budget, acc);
}

static double cset_logp(const ds_cset *cs, double x, double y) {
    double inv2s2 = 0.5 / (cs->sigma * cs->sigma);
    int best = 0;
    double *lb = cs->lb, lbest = INFINITY;
    const double *mr = cs->mr;
    for (int k = 0; k < cs->np; k++) {
        double dx = x - mr[3 * k], dy = y - mr[3 * k + 1], d = sqrt(dx * dx + dy * dy) - mr[3 * k + 2];
        lb[k] = d > 0 ? d : 0;
        if (lb[k] < lbest) { lbest = lb[k]; best = k; }
    }
    ds_lsum acc = { -INFINITY, 0 };
    /* the most promising panel first; its one-piece estimate is the first reference */
    const ds_panel *pb = &cs->p[best];
    ds_lsum first = { -INFINITY, 0 };
    int budget = 100000;
    integrate_piece(cs, pb, pb->a, pb->b, pb->px, pb->py, pb->pw, x, y, 40, -INFINITY, &budget, &first);
    integrate_piece(cs, pb, pb->a, pb->b, pb->px, pb->py, pb->pw, x, y, 0, lsum_log(&first), &budget, &acc);
    const double log_skip = log(1e-17);
    double total = lsum_log(&acc);
    for (int k = 0; k < cs->np; k++) {
        if (k == best) continue;
        const ds_panel *p = &cs->p[k];
        if (p->logbound - cs->lb[k] * cs->lb[k] * inv2s2 < log_skip + total) continue;
        integrate_piece(cs, p, p->a, p->b, p->px, p->py, p->pw, x, y, 0, -INFINITY, &budget, &acc);
        total = lsum_log(&acc);
    }
    return lsum_log(&acc) - log(2.0 * DS_PI * cs->sigma * cs->sigma);
}

/* ---- closed-form sets ---- */

#define G8_R (2.0 * 1.41421356237309504880)
#define G8_S (1.41421356237309504880 / 4.0)
static const double unit8[8][2] = {
    { 1, 0 }, { 0.70710678118654752440, 0.70710678118654752440 }, { 0, 1 },
    { -0.70710678118654752440, 0.70710678118654752440 }, { -1, 0 },
    { -0.70710678118654752440, -0.70710678118654752440 }, { 0, -1 },
    { 0.70710678118654752440, -0.70710678118654752440 },
};

static double logsumexp(const double *v, int n) {
    double m = -INFINITY;
    for (int i = 0; i < n; i++)
        if (v[i] > m) m = v[i];
    if (m == -INFINITY) return m;
    double s = 0;
    for (int i = 0; i < n; i++) s += exp(v[i] - m);
    return m + log(s);
}

static double g8_logp(double x, double y) {
    double l[8], c = -log(8.0) - DS_LOG_2PI - 2.0 * log(G8_S);
    for (int k = 0; k < 8; k++) {
        double dx = x - G8_R * unit8[k][0], dy = y - G8_R * unit8[k][1];
        l[k] = c - 0.5 * (dx * dx + dy * dy) / (G8_S * G8_S);
    }
    return logsumexp(l, 8);
}

#define PW_ARMS 5
#define PW_RSTD 0.3
#define PW_TSTD 0.1
#define PW_RATE 0.25

static double pw_angle(int k, double r) { return 2.0 * DS_PI * k / PW_ARMS + PW_RATE * exp(r); }

static double pinwheel_logp(double x, double y) {
    double v0 = 0.5 * x, v1 = 0.5 * y, r = hypot(v0, v1), l[PW_ARMS];
    double c = -log((double)PW_ARMS) - log(4.0) - DS_LOG_2PI - log(PW_RSTD) - log(PW_TSTD);
    for (int k = 0; k < PW_ARMS; k++) {
        double a = pw_angle(k, r);
        if (!isfinite(a)) a = 0;
        double ca = cos(a), sa = sin(a);
        double f0 = ca * v0 - sa * v1, f1 = sa * v0 + ca * v1;
        double z0 = (f0 - 1.0) / PW_RSTD, z1 = f1 / PW_TSTD;
        l[k] = c - 0.5 * (z0 * z0 + z1 * z1);
    }
    return logsumexp(l, PW_ARMS);
}

static double checker_logp(double x, double y) {
    if (!(x >= -4.0 && x < 4.0 && y >= -4.0 && y < 4.0)) return -INFINITY;
    int i = (int)floor(x / 2.0), j = (int)floor(y / 2.0);
    return ((i + j) & 1) ? -INFINITY : -log(32.0);
}

/* gmm parameters and per-component log normalizers: means, scales [K*D], lognorm [K] */
typedef struct { int D; double *mu, *s, lognorm[RT_DS_GMM_K]; } ds_gmm;

static void gmm_fill(int D, double *mu, double *s) {
    double a = 4.5 / sqrt((double)D);
    for (int k = 0; k < RT_DS_GMM_K; k++) {
        ds_rng r = rng_at(0x676d6dULL, (uint64_t)k);
        for (int j = 0; j < D; j++) {
            double u = rng_unif(&r), u2 = rng_unif(&r);
            mu[k * D + j] = a * (2.0 * u - 1.0);
            s[k * D + j] = 0.3 + 0.3 * u2;
        }
    }
}

int rt_ds_gmm_params(int dim, double *means, double *scales) {
    if (dim < RT_DS_GMM_MIN_DIM || dim > RT_DS_GMM_MAX_DIM || !means || !scales) return -1;
    gmm_fill(dim, means, scales);
    return 0;
}

static int gmm_init(ds_gmm *g, int D, char *err, size_t errlen) {
    g->D = D;
    g->mu = malloc(sizeof(double) * (size_t)(RT_DS_GMM_K * D));
    g->s = malloc(sizeof(double) * (size_t)(RT_DS_GMM_K * D));
    if (!g->mu || !g->s) {
        free(g->mu);
        free(g->s);
        ds_err(err, errlen, "out of memory");
        return -1;
    }
    gmm_fill(D, g->mu, g->s);
    for (int k = 0; k < RT_DS_GMM_K; k++) {
        double c = -log((double)RT_DS_GMM_K) - 0.5 * D * DS_LOG_2PI;
        for (int j = 0; j < D; j++) c -= log(g->s[k * D + j]);
        g->lognorm[k] = c;
    }
    return 0;
}

static void gmm_free(ds_gmm *g) {
    free(g->mu);
    free(g->s);
}

static double gmm_logp(const ds_gmm *g, const double *x) {
    double l[RT_DS_GMM_K];
    int D = g->D;
    for (int k = 0; k < RT_DS_GMM_K; k++) {
        const double *mu = g->mu + k * D, *s = g->s + k * D;
        double q = 0;
        for (int j = 0; j < D; j++) {
            double z = (x[j] - mu[j]) / s[j];
            q += z * z;
        }
        l[k] = g->lognorm[k] - 0.5 * q;
    }
    return logsumexp(l, RT_DS_GMM_K);
}

/* ---- the public functions ---- */

static int check_args(const char *name, int gmm_dim, int64_t n, const void *a, const void *b, int *id, int *dim,
                      char *err, size_t errlen) {
    *id = ds_find(name);
    if (*id < 0) {
        ds_err(err, errlen, "unknown data set '%s'", name ? name : "(null)");
        return -1;
    }
    *dim = rt_ds_dim(name, gmm_dim);
    if (*dim < 0) {
        ds_err(err, errlen, "gmm: the dimension must be %d..%d, not %d", RT_DS_GMM_MIN_DIM, RT_DS_GMM_MAX_DIM, gmm_dim);
        return -1;
    }
    if (n < 0) {
        ds_err(err, errlen, "%s: the number of points must be >= 0, not %lld", name, (long long)n);
        return -1;
    }
    if (n > 0 && (!a || !b)) {
        ds_err(err, errlen, "%s: NULL array", name);
        return -1;
    }
    return 0;
}

static int log_density(int id, int dim, int64_t n, const double *x, double *logp, int refine, char *err,
                       size_t errlen) {
    for (int64_t i = 0; i < n * dim; i++)
        if (!isfinite(x[i])) {
            ds_err(err, errlen, "%s: point %lld, coordinate %d is not finite", ds_names[id], (long long)(i / dim),
                   (int)(i % dim));
            return -1;
        }
    if (id == DS_MOONS || id == DS_CIRCLES || id == DS_SPIRALS) {
        const ds_curve *cv = id == DS_MOONS ? moons_curves : id == DS_CIRCLES ? circles_curves : spiral_curves;
        ds_cset cs;
        if (cset_init(&cs, cv, 2, refine, err, errlen)) return -1;
        for (int64_t i = 0; i < n; i++) logp[i] = cset_logp(&cs, x[2 * i], x[2 * i + 1]);
        cset_free(&cs);
    } else if (id == DS_GMM) {
        ds_gmm g;
        if (gmm_init(&g, dim, err, errlen)) return -1;
        for (int64_t i = 0; i < n; i++) logp[i] = gmm_logp(&g, x + i * dim);
        gmm_free(&g);
    } else {
        for (int64_t i = 0; i < n; i++) {
            double a = x[2 * i], b = x[2 * i + 1];
            logp[i] = id == DS_8GAUSS ? g8_logp(a, b) : id == DS_PINWHEEL ? pinwheel_logp(a, b) : checker_logp(a, b);
        }
    }
    return 0;
}

int rt_ds_log_density_refined(const char *name, int gmm_dim, int64_t n, const double *x, double *logp, int refine,
                              char *err, size_t errlen) {
    int id, dim;
    if (check_args(name, gmm_dim, n, x, logp, &id, &dim, err, errlen)) return -1;
    if (refine < 0 || refine > 4) {
        ds_err(err, errlen, "%s: refine must be 0..4, not %d", name, refine);
        return -1;
    }
    return log_density(id, dim, n, x, logp, refine, err, errlen);
}

int rt_ds_log_density(const char *name, int gmm_dim, int64_t n, const double *x, double *logp, char *err,
                      size_t errlen) {
    return rt_ds_log_density_refined(name, gmm_dim, n, x, logp, 0, err, errlen);
}

int rt_ds_sample(const char *name, int gmm_dim, int64_t n, uint64_t seed, double *x, double *logp, char *err,
                 size_t errlen) {
    int id, dim;
    if (check_args(name, gmm_dim, n, x, x, &id, &dim, err, errlen)) return -1;
    ds_gmm g = { 0 };
    if (id == DS_GMM && gmm_init(&g, dim, err, errlen)) return -1;
    for (int64_t i = 0; i < n; i++) {
        ds_rng r = rng_at(seed, (uint64_t)i);
        double *o = x + i * dim, z0, z1;
        switch (id) {
        case DS_MOONS:
        case DS_CIRCLES:
        case DS_SPIRALS: {
            const ds_curve *cv = id == DS_MOONS ? moons_curves : id == DS_CIRCLES ? circles_curves : spiral_curves;
            const ds_curve *c = rng_unif(&r) < 0.5 ? &cv[0] : &cv[1];
            double t = curve_t(c, rng_unif(&r)), cx, cy;
            curve_point(c, t, &cx, &cy);
            rng_normal2(&r, &z0, &z1);
            o[0] = cx + CURVE_SIGMA * z0;
            o[1] = cy + CURVE_SIGMA * z1;
            break;
        }
        case DS_8GAUSS: {
            int k = (int)floor(8.0 * rng_unif(&r));
            rng_normal2(&r, &z0, &z1);
            o[0] = G8_R * unit8[k][0] + G8_S * z0;
            o[1] = G8_R * unit8[k][1] + G8_S * z1;
            break;
        }
        case DS_PINWHEEL: {
            int k = (int)floor(PW_ARMS * rng_unif(&r));
            rng_normal2(&r, &z0, &z1);
            double f0 = 1.0 + PW_RSTD * z0, f1 = PW_TSTD * z1;
            double a = pw_angle(k, hypot(f0, f1)), ca = cos(a), sa = sin(a);
            o[0] = 2.0 * (f0 * ca + f1 * sa);
            o[1] = 2.0 * (-f0 * sa + f1 * ca);
            break;
        }
        case DS_CHECKER: {
            unsigned bits = (unsigned)(rng_u64(&r) >> 61);
            int ci = (int)(bits >> 1), cj = (ci & 1) + 2 * (int)(bits & 1);
            double u1 = ((double)(rng_u64(&r) >> 16) + 0.5) * 0x1p-48;
            double u2 = ((double)(rng_u64(&r) >> 16) + 0.5) * 0x1p-48;
            o[0] = -4.0 + 2.0 * ci + 2.0 * u1;
            o[1] = -4.0 + 2.0 * cj + 2.0 * u2;
            break;
        }
        case DS_GMM: {
            int k = (int)(rng_u64(&r) >> 61);
            const double *mu = g.mu + k * dim, *s = g.s + k * dim;
            for (int j = 0; j < dim; j += 2) {
                rng_normal2(&r, &z0, &z1);
                o[j] = mu[j] + s[j] * z0;
                if (j + 1 < dim) o[j + 1] = mu[j + 1] + s[j + 1] * z1;
            }
            break;
        }
        }
    }
    if (id == DS_GMM) gmm_free(&g);
    if (logp && n > 0) return log_density(id, dim, n, x, logp, 0, err, errlen);
    return 0;
}

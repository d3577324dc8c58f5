/* compiler/randn.h: the f64 log, sine and cosine of RANDN (tir.h), shared by the interpreter
 * (interp.c) and the code generator (cg.c, emit_rand), which computes the same operations
 * on vectors.
 *
 *   tir_log01(u)             = log(u)                      for u in (0, 1]
 *   tir_sincos2pi(u, &s, &c): s = sin(2 pi u), c = cos(2 pi u)   for u in (0, 1]
 *
 * Built from +, -, *, /, round and bit operations on doubles, each rounded on its own (no
 * fused multiply-add, no libm), in a fixed order, so every backend, vector width and target
 * gets the same bits; libm's log and cos differ between implementations and cannot be
 * vectorized bit for bit. Accuracy (tested against libm in test_cg): a few ulp.
 *
 * log: u = m 2^e with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m - 1) / (m + 1),
 * as 2s + s z P(z), z = s^2, P the atanh series to s^21; log u = e ln2_hi + (e ln2_lo + log m).
 * sin, cos: t = u - 1/2 (exact), q = round(4t), r = t - q/4 (exact, |r| <= 1/8), x = 2 pi r;
 * then cos(2 pi u) = -cos(x + q pi/2): -cos x, sin x, -sin x or cos x for q = 0, 1, -1, +-2,
 * and sin(2 pi u) = -sin(x + q pi/2): -sin x, -cos x, cos x or sin x, with sin x and cos x
 * from their Taylor series to x^17 and x^16. */
#ifndef NFC_RANDN_H
#define NFC_RANDN_H
#include <stdint.h>
#include <string.h>

#define TIR_RLOG_N 10   /* 2/3, 2/5, ..., 2/21 */
static const double tir_rlog[TIR_RLOG_N] = { 2.0 / 3, 2.0 / 5, 2.0 / 7, 2.0 / 9, 2.0 / 11, 2.0 / 13, 2.0 / 15, 2.0 / 17, 2.0 / 19, 2.0 / 21 };
#define TIR_RTRIG_N 8
static const double tir_rsin[TIR_RTRIG_N] = { -1.0 / 6, 1.0 / 120, -1.0 / 5040, 1.0 / 362880, -1.0 / 39916800,
                                              1.0 / 6227020800.0, -1.0 / 1307674368000.0, 1.0 / 355687428096000.0 };
static const double tir_rcos[TIR_RTRIG_N] = { -1.0 / 2, 1.0 / 24, -1.0 / 720, 1.0 / 40320, -1.0 / 3628800,
                                              1.0 / 479001600, -1.0 / 87178291200.0, 1.0 / 20922789888000.0 };
#define TIR_SQRT2 0x1.6a09e667f3bcdp+0
#define TIR_LN2_HI 0x1.62e42fefa39efp-1
#define TIR_LN2_LO 0x1.abc9e3b39803fp-56
#define TIR_2PI 0x1.921fb54442d18p+2

/* One operation per statement: a compiler that contracts a * b + c within an expression
 * (clang's default) must not fuse them here. */
static inline double tir_log01(double u) {
    uint64_t b, mb;
    memcpy(&b, &u, sizeof b);
    int64_t e = (int64_t)((b >> 52) & 0x7ff) - 1023;
    mb = (b & 0x000fffffffffffffull) | 0x3ff0000000000000ull;
    double m;
    memcpy(&m, &mb, sizeof m);
    if (m > TIR_SQRT2) {
        m = m * 0.5;
        e = e + 1;
    }
    double num = m - 1.0;
    double den = m + 1.0;
    double s = num / den;
    double z = s * s;
    double p = tir_rlog[TIR_RLOG_N - 1];
    for (int k = TIR_RLOG_N - 2; k >= 0; k--) {
        p = p * z;
        p = p + tir_rlog[k];
    }
    double sz = s * z;
    double t = sz * p;
    double s2 = s + s;
    double lm = s2 + t;
    double ed = (double)e;
    double lo = ed * TIR_LN2_LO;
    lo = lo + lm;
    double hi = ed * TIR_LN2_HI;
    return hi + lo;
}

static inline void tir_sincos2pi(double u, double *sin_out, double *cos_out) {
    double t = u - 0.5;
    double t4 = t * 4.0;
    double q = __builtin_round(t4);   /* round(): ties away from zero, as llvm.round */
    double q4 = q * 0.25;
    double r = t - q4;
    double x = r * TIR_2PI;
    double x2 = x * x;
    double ps = tir_rsin[TIR_RTRIG_N - 1], pc = tir_rcos[TIR_RTRIG_N - 1];
    for (int k = TIR_RTRIG_N - 2; k >= 0; k--) {
        ps = ps * x2;
        ps = ps + tir_rsin[k];
        pc = pc * x2;
        pc = pc + tir_rcos[k];
    }
    double x3 = x * x2;
    double sp = x3 * ps;
    double sn = x + sp;
    double cp = x2 * pc;
    double cs = 1.0 + cp;
    /* 2 pi u = x + q pi/2 + pi, so cos(2 pi u) = -cos(x + q pi/2), sin(2 pi u) = -sin(x + q pi/2) */
    if (q == 0) {
        *cos_out = -cs;
        *sin_out = -sn;
    } else if (q == 1) {
        *cos_out = sn;
        *sin_out = -cs;
    } else if (q == -1) {
        *cos_out = -sn;
        *sin_out = cs;
    } else {
        *cos_out = cs;
        *sin_out = sn;
    }
}

#endif

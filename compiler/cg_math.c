/* compiler/cg_math.c: exp, log, log1p, expm1, tanh as branch-free LLVM IR (see cg_math.h;
 * algorithms and measured accuracy in docs/codegen.md, "Math without Sleef").
 *
 * Every value is a float or double scalar or vector (T) of L lanes; integer work uses the
 * integer type of the same width and lane count (I: i32 or i64). Special inputs (NaN, +-inf,
 * zeros, out-of-range arguments) are clamped to harmless values before the integer
 * conversions (so no poison can arise), and the exact results are selected at the end.
 * Products that should fuse use llvm.fmuladd: the results stay within their bounds whether
 * or not the target has FMA. No instruction carries fast-math flags.
 *
 * Coefficients (published, not refitted here):
 *   exp/expm1 core: Sleef 3.5 (xexpf, xexp) minimax polynomials of expm1(r)/r^2 ~ 1/2 + ...
 *   log/log1p:      fdlibm e_log.c / s_log1p.c (f64, Lg1..Lg7) and FreeBSD e_logf.c (f32,
 *                   Lg1..Lg4), in s = f/(2+f)
 *   tanh, |x| < 0.625: Cephes tanhf.c polynomial (f32) and tanh.c rational P/Q (f64)
 */
#include "cg_math.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    LLVMContextRef C;
    LLVMBuilderRef b;
    LLVMModuleRef  M;
    LLVMTypeRef    T, I;     /* value type, integer type of the same shape */
    LLVMTypeRef    et, it;   /* element types */
    int            L, f64;
} mc;

/* ---------------------------------------------------------------- small builders */

static LLVMValueRef splat_const(mc *m, LLVMValueRef s) {
    if (m->L == 1) return s;
    LLVMValueRef e[64];
    for (int i = 0; i < m->L; i++) e[i] = s;
    return LLVMConstVector(e, (unsigned)m->L);
}
static LLVMValueRef kf(mc *m, double v) { return splat_const(m, LLVMConstReal(m->et, v)); }
static LLVMValueRef ki(mc *m, int64_t v) { return splat_const(m, LLVMConstInt(m->it, (unsigned long long)v, 1)); }

static LLVMValueRef add(mc *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFAdd(m->b, a, b, ""); }
static LLVMValueRef sub(mc *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFSub(m->b, a, b, ""); }
static LLVMValueRef mul(mc *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFMul(m->b, a, b, ""); }
static LLVMValueRef fdv(mc *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFDiv(m->b, a, b, ""); }
static LLVMValueRef sel(mc *m, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSelect(m->b, c, a, b, ""); }
static LLVMValueRef fcmp(mc *m, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFCmp(m->b, p, a, b, ""); }
static LLVMValueRef icmp(mc *m, LLVMIntPredicate p, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildICmp(m->b, p, a, b, ""); }
static LLVMValueRef iadd(mc *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildAdd(m->b, a, b, ""); }
static LLVMValueRef isub(mc *m, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSub(m->b, a, b, ""); }
static LLVMValueRef as_int(mc *m, LLVMValueRef v) { return LLVMBuildBitCast(m->b, v, m->I, ""); }
static LLVMValueRef as_flt(mc *m, LLVMValueRef v) { return LLVMBuildBitCast(m->b, v, m->T, ""); }

static LLVMValueRef intr(mc *m, const char *name, LLVMValueRef *args, int n) {
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    LLVMTypeRef fty = LLVMIntrinsicGetType(m->C, id, &m->T, 1);
    LLVMValueRef f = LLVMGetIntrinsicDeclaration(m->M, id, &m->T, 1);
    return LLVMBuildCall2(m->b, fty, f, args, (unsigned)n, "");
}
/* a*b + c, fused where the target has FMA */
static LLVMValueRef fma_(mc *m, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
    LLVMValueRef v[3] = { a, b, c };
    return intr(m, "llvm.fmuladd", v, 3);
}
static LLVMValueRef fabs_(mc *m, LLVMValueRef a) { return intr(m, "llvm.fabs", &a, 1); }
static LLVMValueRef copysign_(mc *m, LLVMValueRef mag, LLVMValueRef sgn) {
    LLVMValueRef v[2] = { mag, sgn };
    return intr(m, "llvm.copysign", v, 2);
}

/* Horner: c[0] x^(n-1) + ... + c[n-1] */
static LLVMValueRef horner(mc *m, LLVMValueRef x, const double *c, int n) {
    LLVMValueRef u = kf(m, c[0]);
    for (int i = 1; i < n; i++) u = fma_(m, u, x, kf(m, c[i]));
    return u;
}

/* min/max against a constant; a NaN x gives the bound (callers select NaN at the end) */
static LLVMValueRef clamp(mc *m, LLVMValueRef x, double lo, double hi) {
    x = sel(m, fcmp(m, LLVMRealOGT, x, kf(m, lo)), x, kf(m, lo));
    return sel(m, fcmp(m, LLVMRealOLT, x, kf(m, hi)), x, kf(m, hi));
}

static int mbits(mc *m) { return m->f64 ? 52 : 23; }
static int ebias(mc *m) { return m->f64 ? 1023 : 127; }

/* 2^k for an integer k inside the normal exponent range */
static LLVMValueRef pow2i(mc *m, LLVMValueRef k) {
    return as_flt(m, LLVMBuildShl(m->b, iadd(m, k, ki(m, ebias(m))), ki(m, mbits(m)), ""));
}
/* v * 2^k for |k| up to twice the exponent range: two exact scalings, so results that
 * overflow become inf and results in the subnormal range are rounded once (gradual) */
static LLVMValueRef ldexp2(mc *m, LLVMValueRef v, LLVMValueRef k) {
    LLVMValueRef k1 = LLVMBuildAShr(m->b, k, ki(m, 1), "");
    return mul(m, mul(m, v, pow2i(m, k1)), pow2i(m, isub(m, k, k1)));
}

static LLVMValueRef nan_through(mc *m, LLVMValueRef x, LLVMValueRef r) {
    return sel(m, fcmp(m, LLVMRealUNO, x, x), x, r);
}
static LLVMValueRef zero_through(mc *m, LLVMValueRef x, LLVMValueRef r) {   /* f(+-0) = +-0 */
    return sel(m, fcmp(m, LLVMRealOEQ, x, kf(m, 0)), x, r);
}

/* ---------------------------------------------------------------- exp and expm1 */

/* x = k ln2 + r, |r| <= ln2/2 (x already clamped: finite, |x / ln2| well below 2^22):
 * *k as an integer, returns q = expm1(r) = r + r^2 P(r). */
static LLVMValueRef exp_core(mc *m, LLVMValueRef x, LLVMValueRef *k) {
    /* round x/ln2 to an integer by adding 1.5*2^p: the low mantissa bits then hold k */
    double magic = m->f64 ? 0x1.8p52 : 0x1.8p23;
    LLVMValueRef t = fma_(m, x, kf(m, 1.4426950408889634074), kf(m, magic));
    LLVMValueRef kfl = sub(m, t, kf(m, magic));
    *k = isub(m, as_int(m, t), as_int(m, kf(m, magic)));
    /* Cody-Waite: ln2hi has enough trailing zero bits that k*ln2hi is exact */
    double ln2hi = m->f64 ? 0x1.62e42feep-1 : 0x1.62e4p-1;
    double ln2lo = m->f64 ? 0x1.a39ef35793c76p-33 : 1.428606765330187045e-06;
    LLVMValueRef r = fma_(m, kfl, kf(m, -ln2hi), x);
    r = fma_(m, kfl, kf(m, -ln2lo), r);
    static const double p32[] = { 0.000198527617612853646278381, 0.00139304355252534151077271,
                                  0.00833336077630519866943359, 0.0416664853692054748535156,
                                  0.166666671633720397949219, 0.5 };
    static const double p64[] = { 2.08860621107283687536341e-09, 2.51112930892876518610661e-08,
                                  2.75573911234900471893338e-07, 2.75572362911928827629423e-06,
                                  2.4801587159235472998791e-05,  0.000198412698960509205564975,
                                  0.00138888888889774492207962,  0.00833333333331652721664984,
                                  0.0416666666666665047591422,   0.166666666666666851703837,
                                  0.5 };
    LLVMValueRef u = m->f64 ? horner(m, r, p64, 11) : horner(m, r, p32, 6);
    return fma_(m, mul(m, r, r), u, r);
}

static LLVMValueRef emit_exp(mc *m, LLVMValueRef x) {
    /* exp overflows above 88.72 (f32) / 709.78 (f64) and is below half the smallest
     * subnormal under -103.97 / -745.13; the clamp keeps k and k/2 in range */
    LLVMValueRef xc = m->f64 ? clamp(m, x, -750, 710) : clamp(m, x, -104, 89);
    LLVMValueRef k, q = exp_core(m, xc, &k);
    LLVMValueRef r = ldexp2(m, add(m, q, kf(m, 1)), k);
    r = sel(m, fcmp(m, LLVMRealOLT, x, kf(m, m->f64 ? -750 : -104)), kf(m, 0), r);
    return nan_through(m, x, r);
}

/* expm1(x) = 2^k (q + 1 - 2^-k), q = expm1(r): no cancellation for small x (k = 0: q) */
static LLVMValueRef emit_expm1(mc *m, LLVMValueRef x) {
    /* below -30 (f32) / -60 (f64) the result is -1 after rounding */
    LLVMValueRef xc = m->f64 ? clamp(m, x, -60, 710) : clamp(m, x, -30, 89);
    LLVMValueRef k, q = exp_core(m, xc, &k);
    /* 1 - 2^-k; past k = 30 / 60 it rounds to 1, so k is capped there (2^-k stays normal) */
    int kcap = m->f64 ? 60 : 30;
    LLVMValueRef kc = sel(m, icmp(m, LLVMIntSLT, k, ki(m, kcap)), k, ki(m, kcap));
    LLVMValueRef c = sub(m, kf(m, 1), pow2i(m, isub(m, ki(m, 0), kc)));
    LLVMValueRef r = ldexp2(m, add(m, q, c), k);
    return nan_through(m, x, zero_through(m, x, r));
}

/* ---------------------------------------------------------------- log and log1p */

/* log(1+f) for 1+f in [sqrt(1/2), sqrt(2)), plus k ln2 + c (fdlibm's formula):
 * s = f/(2+f), log(1+f) = f - hfsq + s (hfsq + R(s^2)), hfsq = f^2/2 */
static LLVMValueRef log_tail(mc *m, LLVMValueRef f, LLVMValueRef dk, LLVMValueRef c) {
    LLVMValueRef s = fdv(m, f, add(m, kf(m, 2), f));
    LLVMValueRef z = mul(m, s, s), w = mul(m, z, z), R;
    if (m->f64) {
        static const double odd[] = { 1.479819860511658591e-01, 1.818357216161805012e-01, 2.857142874366239149e-01,
                                      6.666666666666735130e-01 };
        static const double even[] = { 1.531383769920937332e-01, 2.222219843214978396e-01, 3.999999999940941908e-01 };
        LLVMValueRef t1 = mul(m, w, horner(m, w, even, 3)); /* w (Lg2 + w (Lg4 + w Lg6)) */
        LLVMValueRef t2 = mul(m, z, horner(m, w, odd, 4));  /* z (Lg1 + w (Lg3 + w (Lg5 + w Lg7))) */
        R = add(m, t2, t1);
    } else {
        static const double odd[] = { 0x91e9ee.0p-25, 0xaaaaaa.0p-24 };   /* Lg3, Lg1 */
        static const double even[] = { 0xf89e26.0p-26, 0xccce13.0p-25 };  /* Lg4, Lg2 */
        LLVMValueRef t1 = mul(m, w, horner(m, w, even, 2));
        LLVMValueRef t2 = mul(m, z, horner(m, w, odd, 2));
        R = add(m, t2, t1);
    }
    double ln2hi = m->f64 ? 6.93147180369123816490e-01 : 6.9313812256e-01;
    double ln2lo = m->f64 ? 1.90821492927058770002e-10 : 9.0580006145e-06;
    LLVMValueRef hfsq = mul(m, mul(m, kf(m, 0.5), f), f);
    LLVMValueRef r = fma_(m, s, add(m, hfsq, R), fma_(m, dk, kf(m, ln2lo), c));
    r = add(m, sub(m, r, hfsq), f);
    return fma_(m, dk, kf(m, ln2hi), r);
}

/* u = 2^k m, m in [sqrt(1/2), sqrt(2)), for positive normal u: returns m, *k (integer) */
static LLVMValueRef split_sqrt2(mc *m, LLVMValueRef u, LLVMValueRef *k) {
    int64_t one = m->f64 ? 0x3ff0000000000000 : 0x3f800000;
    int64_t rs2 = m->f64 ? 0x3fe6a09e00000000 : 0x3f3504f3;   /* ~sqrt(1/2) */
    LLVMValueRef ix = iadd(m, as_int(m, u), ki(m, one - rs2));
    *k = isub(m, LLVMBuildLShr(m->b, ix, ki(m, mbits(m)), ""), ki(m, ebias(m)));
    LLVMValueRef mant = LLVMBuildAnd(m->b, ix, ki(m, ((int64_t)1 << mbits(m)) - 1), "");
    return as_flt(m, iadd(m, mant, ki(m, rs2)));
}

/* integer k (|k| < 2^31) as T; via i32 so that f64 vectors need no i64 conversion */
static LLVMValueRef k_to_float(mc *m, LLVMValueRef k) {
    if (!m->f64) return LLVMBuildSIToFP(m->b, k, m->T, "");
    LLVMContextRef C = m->C;
    LLVMTypeRef i32 = LLVMInt32TypeInContext(C);
    LLVMTypeRef t32 = m->L > 1 ? LLVMVectorType(i32, (unsigned)m->L) : i32;
    return LLVMBuildSIToFP(m->b, LLVMBuildTrunc(m->b, k, t32, ""), m->T, "");
}

static LLVMValueRef emit_log(mc *m, LLVMValueRef x) {
    /* subnormals: scale into the normal range first */
    double tiny = m->f64 ? 0x1p-1022 : 0x1p-126;
    int sh = m->f64 ? 54 : 25;
    LLVMValueRef sub_ = fcmp(m, LLVMRealOLT, x, kf(m, tiny));
    LLVMValueRef xs = sel(m, sub_, mul(m, x, kf(m, m->f64 ? 0x1p54 : 0x1p25)), x);
    LLVMValueRef k, mm = split_sqrt2(m, xs, &k);
    k = isub(m, k, sel(m, sub_, ki(m, sh), ki(m, 0)));
    LLVMValueRef r = log_tail(m, sub(m, mm, kf(m, 1)), k_to_float(m, k), kf(m, 0));
    r = sel(m, fcmp(m, LLVMRealOEQ, x, kf(m, INFINITY)), x, r);
    r = sel(m, fcmp(m, LLVMRealOLT, x, kf(m, 0)), kf(m, NAN), r);
    r = sel(m, fcmp(m, LLVMRealOEQ, x, kf(m, 0)), kf(m, -INFINITY), r);
    return nan_through(m, x, r);
}

/* log1p(x) = log(u) + c/u with u = 1+x rounded, c = (1+x) - u computed exactly
 * (fdlibm's s_log1p); for 1+x in [sqrt(1/2), sqrt(2)) directly log(1+f) with f = x */
static LLVMValueRef emit_log1p(mc *m, LLVMValueRef x) {
    /* u in [2^-24 (f32) or 2^-53, inf]: never subnormal; x < -1 and NaN give garbage
     * here (no UB: integer and float ops only), replaced at the end */
    LLVMValueRef u = add(m, kf(m, 1), x);
    LLVMValueRef k, mm = split_sqrt2(m, u, &k);
    LLVMValueRef k0 = icmp(m, LLVMIntEQ, k, ki(m, 0));
    LLVMValueRef c = sel(m, icmp(m, LLVMIntSGE, k, ki(m, 2)), sub(m, kf(m, 1), sub(m, u, x)), sub(m, x, sub(m, u, kf(m, 1))));
    c = fdv(m, c, u);
    /* k = 0: no correction needed (f = x exactly); large k: c/u is negligible (and u may be inf) */
    LLVMValueRef nocorr = LLVMBuildOr(m->b, k0, icmp(m, LLVMIntSGE, k, ki(m, m->f64 ? 54 : 25)), "");
    c = sel(m, nocorr, kf(m, 0), c);
    LLVMValueRef f = sel(m, k0, x, sub(m, mm, kf(m, 1)));
    LLVMValueRef r = log_tail(m, f, k_to_float(m, k), c);
    r = sel(m, fcmp(m, LLVMRealOEQ, x, kf(m, INFINITY)), x, r);
    r = sel(m, fcmp(m, LLVMRealOLT, x, kf(m, -1)), kf(m, NAN), r);
    r = sel(m, fcmp(m, LLVMRealOEQ, x, kf(m, -1)), kf(m, -INFINITY), r);
    return nan_through(m, x, zero_through(m, x, r));
}

/* ---------------------------------------------------------------- tanh */

static LLVMValueRef emit_tanh(mc *m, LLVMValueRef x) {
    LLVMValueRef a = fabs_(m, x);
    /* |x| < 0.625: odd polynomial (f32) or rational (f64) in z = x^2 */
    LLVMValueRef z = mul(m, x, x), small;
    if (m->f64) {
        static const double P[] = { -9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3 };
        static const double Q[] = { 1, 1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3 };
        LLVMValueRef pq = fdv(m, mul(m, horner(m, z, P, 3), z), horner(m, z, Q, 4));
        small = fma_(m, x, pq, x);
        /* elsewhere tanh|x| = y / (y + 2), y = expm1(2|x|); past 20 it rounds to 1 */
        LLVMValueRef y = emit_expm1(m, mul(m, kf(m, 2), clamp(m, a, 0, 20)));
        LLVMValueRef big = copysign_(m, fdv(m, y, add(m, y, kf(m, 2))), x);
        LLVMValueRef r = sel(m, fcmp(m, LLVMRealOLT, a, kf(m, 0.625)), small, big);
        return nan_through(m, x, zero_through(m, x, r));
    }
    static const double P[] = { -5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
                                -3.33332819422e-1 };
    /* x + x z P(z); z P(z) + 0 turns the -0 of z = 0 into +0, so that x = -0 gives -0 */
    small = fma_(m, x, fma_(m, horner(m, z, P, 5), z, kf(m, 0)), x);
    /* elsewhere tanh|x| = 1 - 2 / (e + 1), e = exp(2|x|) from the exp core: |x| is at least
     * 0.625 there and is clamped to 9.1, where tanh has rounded to 1 (from 9.01 on), so no
     * special value reaches it and 2^k needs one scaling. A NaN compares unordered and takes
     * the polynomial, which returns it. */
    LLVMValueRef ac = sel(m, fcmp(m, LLVMRealOLT, a, kf(m, 9.1)), a, kf(m, 9.1)), k;
    LLVMValueRef q = exp_core(m, add(m, ac, ac), &k);
    LLVMValueRef e = mul(m, add(m, q, kf(m, 1)), pow2i(m, k));
    LLVMValueRef big = copysign_(m, sub(m, kf(m, 1), fdv(m, kf(m, 2), add(m, e, kf(m, 1)))), x);
    return sel(m, fcmp(m, LLVMRealULT, a, kf(m, 0.625)), small, big);
}

/* exp for arguments known to lie in [-80, 80] (or NaN): the exp core and one exact scaling,
 * none of exp's clamps and special cases (no overflow, no subnormal result in that range);
 * a NaN goes through the arithmetic and comes out NaN */
static LLVMValueRef emit_exp_inrange(mc *m, LLVMValueRef x) {
    LLVMValueRef k, q = exp_core(m, x, &k);
    return mul(m, add(m, q, kf(m, 1)), pow2i(m, k));
}

/* ---------------------------------------------------------------- entry */

LLVMValueRef cgm_emit(LLVMContextRef C, LLVMBuilderRef b, LLVMModuleRef M, int f, LLVMValueRef v) {
    mc m;
    memset(&m, 0, sizeof m);
    m.C = C;
    m.b = b;
    m.M = M;
    m.T = LLVMTypeOf(v);
    int vec = LLVMGetTypeKind(m.T) == LLVMVectorTypeKind;
    m.L = vec ? (int)LLVMGetVectorSize(m.T) : 1;
    m.et = vec ? LLVMGetElementType(m.T) : m.T;
    LLVMTypeKind ek = LLVMGetTypeKind(m.et);
    if ((ek != LLVMFloatTypeKind && ek != LLVMDoubleTypeKind) || m.L < 1 || m.L > 64) return NULL;
    m.f64 = ek == LLVMDoubleTypeKind;
    m.it = LLVMIntTypeInContext(C, m.f64 ? 64 : 32);
    m.I = vec ? LLVMVectorType(m.it, (unsigned)m.L) : m.it;
    switch (f) {
    case CGM_EXP: return emit_exp(&m, v);
    case CGM_LOG: return emit_log(&m, v);
    case CGM_LOG1P: return emit_log1p(&m, v);
    case CGM_EXPM1: return emit_expm1(&m, v);
    case CGM_TANH: return emit_tanh(&m, v);
    case CGM_EXP_INRANGE: return emit_exp_inrange(&m, v);
    default: return NULL;
    }
}

/* tests/unit/test_math.c: the Sleef-free exp, log, log1p, expm1 and tanh of cg_math.c, and
 * a whole flow compiled with use_sleef = 0.
 *
 * - accuracy: one module with a kernel `void f(int64_t n, const T *x, T *y)` per function
 *   (and exp_inrange, exp for arguments in [-80, 80], measured on those only),
 *   dtype and vector width (f32: 1, 4, 8, 16 lanes; f64: 1, 2, 4, 8), optimized at O2 and
 *   JITted with LLJIT through the LLVM C API (no process symbols: any call that is not
 *   lowered inline would fail the lookup). Each function is swept over
 *     f32: every 1021st bit pattern (all signs, exponents, NaNs and infinities), plus a dense
 *          uniform grid over the interesting range and one near 0;
 *     f64: random bit patterns, plus the same kind of grids;
 *   the error in ulps is measured against libm in double (f32) and in long double (f64),
 *   the largest is printed ("    max ulp exp f32 = 0.81") and must stay within the bound
 *   documented in docs/codegen.md. Every width must give bit-identical results.
 *   On x86-64 the same kernels are also built for CPU "x86-64" (SSE2, no FMA, so every
 *   llvm.fmuladd is a separate multiply and add) and must meet the same bounds.
 * - special values and thresholds exact (inf, -inf, NaN, +-0, -1, overflow/underflow edges).
 * - the IR of the kernels calls nothing but llvm.* intrinsics.
 * - moons and custom (examples/): every derived program plus loss_grad, compiled with
 *   use_sleef = 0 (native width: f64 at O2, f32 at O0), equals the interpreter, and the
 *   module mentions no Sleef function.
 * The ASan build sweeps 8x fewer points and compiles only custom (NFC_MATH_SCALE=k
 * multiplies the sweep by k). NFC_MATH_TIMING=1 prints CPU times. */
#include "t.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "cg.h"
#include "cg_math.h"
#include "derive.h"
#include "front.h"
#include "grad.h"
#include "init.h"
#include "interp.h"
#include "jit.h"

#if defined(__SANITIZE_ADDRESS__)
enum { SANITIZED = 1 };
#else
enum { SANITIZED = 0 };
#endif

/* the five functions, and exp for arguments in [-80, 80] (CGM_EXP_INRANGE: measured there only) */
#define NF (CGM_EXP_INRANGE + 1)
#define INRANGE 80.0
static const char *const fname[NF] = { "exp", "log", "log1p", "expm1", "tanh", "exp_inrange" };

/* documented max ulp (docs/codegen.md, "Math without Sleef"), [f][f64] */
static const double bound[NF][2] = {
    { 1.5, 1.5 },   /* exp */
    { 1.5, 1.5 },   /* log */
    { 2.0, 2.0 },   /* log1p */
    { 2.0, 2.0 },   /* expm1 */
    { 1.5, 2.0 },   /* tanh */
    { 1.5, 1.5 },   /* exp_inrange */
};

static const int widths[2][4] = { { 1, 4, 8, 16 }, { 1, 2, 4, 8 } };

/* ------------------------------------------------------------------ JIT of the kernels */

typedef void (*kfn)(int64_t n, const void *x, void *y);

static char host_cpu[128], host_feat[4096];

static void set_target(LLVMContextRef C, LLVMValueRef fn, const char *cpu, const char *feat) {
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                            LLVMCreateStringAttribute(C, "target-cpu", 10, cpu, (unsigned)strlen(cpu)));
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                            LLVMCreateStringAttribute(C, "target-features", 15, feat, (unsigned)strlen(feat)));
}

/* void name(n, x, y): for (i = 0; i < n; i += L) y[i..i+L) = f(x[i..i+L)); n % L == 0 */
static void build_kernel(LLVMContextRef C, LLVMModuleRef M, const char *name, int f, int f64, int L, const char *cpu,
                         const char *feat) {
    LLVMTypeRef i64 = LLVMInt64TypeInContext(C), ptr = LLVMPointerTypeInContext(C, 0);
    LLVMTypeRef et = f64 ? LLVMDoubleTypeInContext(C) : LLVMFloatTypeInContext(C);
    LLVMTypeRef vt = L > 1 ? LLVMVectorType(et, (unsigned)L) : et;
    LLVMTypeRef ps[3] = { i64, ptr, ptr };
    LLVMTypeRef fty = LLVMFunctionType(LLVMVoidTypeInContext(C), ps, 3, 0);
    LLVMValueRef fn = LLVMAddFunction(M, name, fty);
    set_target(C, fn, cpu, feat);
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(C, fn, "entry");
    LLVMBasicBlockRef loop = LLVMAppendBasicBlockInContext(C, fn, "loop");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(C, fn, "done");
    LLVMBuilderRef b = LLVMCreateBuilderInContext(C);
    LLVMPositionBuilderAtEnd(b, entry);
    LLVMValueRef n = LLVMGetParam(fn, 0), zero = LLVMConstInt(i64, 0, 0);
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSGT, n, zero, ""), loop, done);
    LLVMPositionBuilderAtEnd(b, loop);
    LLVMValueRef i = LLVMBuildPhi(b, i64, "i");
    LLVMValueRef px = LLVMBuildGEP2(b, et, LLVMGetParam(fn, 1), &i, 1, "");
    LLVMValueRef py = LLVMBuildGEP2(b, et, LLVMGetParam(fn, 2), &i, 1, "");
    LLVMValueRef x = LLVMBuildLoad2(b, vt, px, "");
    LLVMSetAlignment(x, f64 ? 8 : 4);
    LLVMValueRef y = cgm_emit(C, b, M, f, x);
    LLVMValueRef st = LLVMBuildStore(b, y, py);
    LLVMSetAlignment(st, f64 ? 8 : 4);
    LLVMValueRef next = LLVMBuildAdd(b, i, LLVMConstInt(i64, (unsigned long long)L, 0), "");
    LLVMValueRef inc[2] = { zero, next };
    LLVMBasicBlockRef from[2] = { entry, loop };
    LLVMAddIncoming(i, inc, from, 2);
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, next, n, ""), loop, done);
    LLVMPositionBuilderAtEnd(b, done);
    LLVMBuildRetVoid(b);
    LLVMDisposeBuilder(b);
}

/* every call in M is to an llvm.* intrinsic */
static int only_intrinsic_calls(LLVMModuleRef M, char *bad, size_t badlen) {
    for (LLVMValueRef fn = LLVMGetFirstFunction(M); fn; fn = LLVMGetNextFunction(fn))
        for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(fn); bb; bb = LLVMGetNextBasicBlock(bb))
            for (LLVMValueRef in = LLVMGetFirstInstruction(bb); in; in = LLVMGetNextInstruction(in)) {
                if (LLVMGetInstructionOpcode(in) != LLVMCall) continue;
                size_t len;
                const char *callee = LLVMGetValueName2(LLVMGetCalledValue(in), &len);
                if (strncmp(callee, "llvm.", 5)) {
                    snprintf(bad, badlen, "%s", callee);
                    return 0;
                }
            }
    return 1;
}

static LLVMOrcLLJITRef JM;
/* kernels[f][f64][wi]; nofma[f][f64]: the x86-64 (no FMA) build, or NULL */
static kfn kernels[NF][2][4], nofma[NF][2];

static int take_err(LLVMErrorRef e, const char *what) {
    if (!e) return 0;
    char *msg = LLVMGetErrorMessage(e);
    CHECK(0, "%s: %s", what, msg);
    LLVMDisposeErrorMessage(msg);
    return -1;
}

static int build_all(void) {
    LLVMInitializeNativeTarget();
    LLVMInitializeNativeAsmPrinter();
    char *cpu = LLVMGetHostCPUName(), *feat = LLVMGetHostCPUFeatures(), *triple = LLVMGetDefaultTargetTriple();
    snprintf(host_cpu, sizeof host_cpu, "%s", cpu);
    snprintf(host_feat, sizeof host_feat, "%s", feat);
    int x86 = !strncmp(triple, "x86_64", 6);
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    LLVMContextRef C = LLVMOrcThreadSafeContextGetContext(tsc);
    LLVMModuleRef M = LLVMModuleCreateWithNameInContext("math", C);
    LLVMSetTarget(M, triple);
    char name[64];
    for (int f = 0; f < NF; f++)
        for (int d = 0; d < 2; d++) {
            for (int wi = 0; wi < 4; wi++) {
                snprintf(name, sizeof name, "%s_%s_%d", fname[f], d ? "f64" : "f32", widths[d][wi]);
                build_kernel(C, M, name, f, d, widths[d][wi], host_cpu, host_feat);
            }
            if (x86) {
                snprintf(name, sizeof name, "%s_%s_nofma", fname[f], d ? "f64" : "f32");
                build_kernel(C, M, name, f, d, d ? 2 : 4, "x86-64", "");
            }
        }
    char *msg = NULL, bad[256] = "";
    int rc = 0;
    if (LLVMVerifyModule(M, LLVMReturnStatusAction, &msg)) {
        CHECK(0, "verify: %s", msg);
        rc = -1;
    }
    LLVMDisposeMessage(msg);
    CHECK(only_intrinsic_calls(M, bad, sizeof bad), "the kernels call %s", bad);
    /* O2 like cg.c, so the optimizer sees (and must keep) the special-case selects */
    LLVMTargetRef T = NULL;
    LLVMTargetMachineRef TM = NULL;
    if (!rc && !LLVMGetTargetFromTriple(triple, &T, &msg)) {
        TM = LLVMCreateTargetMachine(T, triple, cpu, feat, LLVMCodeGenLevelDefault, LLVMRelocPIC, LLVMCodeModelJITDefault);
        LLVMTargetDataRef td = LLVMCreateTargetDataLayout(TM);
        LLVMSetModuleDataLayout(M, td);
        LLVMDisposeTargetData(td);
        LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
        rc = take_err(LLVMRunPasses(M, "default<O2>", TM, po), "passes");
        LLVMDisposePassBuilderOptions(po);
        CHECK(only_intrinsic_calls(M, bad, sizeof bad), "after O2 the kernels call %s", bad);
    } else if (msg) {
        CHECK(0, "target: %s", msg);
        LLVMDisposeMessage(msg);
        rc = -1;
    }
    LLVMDisposeMessage(cpu);
    LLVMDisposeMessage(feat);
    LLVMDisposeMessage(triple);
    if (rc) {
        if (TM) LLVMDisposeTargetMachine(TM);
        LLVMDisposeModule(M);
        LLVMOrcDisposeThreadSafeContext(tsc);
        return -1;
    }
    LLVMOrcLLJITBuilderRef jb = LLVMOrcCreateLLJITBuilder();
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(jb, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(TM));
    if (take_err(LLVMOrcCreateLLJIT(&JM, jb), "LLJIT")) {
        LLVMDisposeModule(M);
        LLVMOrcDisposeThreadSafeContext(tsc);
        return -1;
    }
    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(M, tsc);
    LLVMOrcDisposeThreadSafeContext(tsc);
    if (take_err(LLVMOrcLLJITAddLLVMIRModule(JM, LLVMOrcLLJITGetMainJITDylib(JM), tsm), "add module")) return -1;
    for (int f = 0; f < NF; f++)
        for (int d = 0; d < 2; d++) {
            LLVMOrcExecutorAddress a = 0;
            for (int wi = 0; wi < 4; wi++) {
                snprintf(name, sizeof name, "%s_%s_%d", fname[f], d ? "f64" : "f32", widths[d][wi]);
                if (take_err(LLVMOrcLLJITLookup(JM, &a, name), name)) return -1;
                kernels[f][d][wi] = (kfn)(uintptr_t)a;
            }
            if (x86) {
                snprintf(name, sizeof name, "%s_%s_nofma", fname[f], d ? "f64" : "f32");
                if (take_err(LLVMOrcLLJITLookup(JM, &a, name), name)) return -1;
                nofma[f][d] = (kfn)(uintptr_t)a;
            }
        }
    return 0;
}

/* ------------------------------------------------------------------ references and ulps */

static double ref32(int f, float x) {
    double d = x;
    switch (f) {
    case CGM_EXP: case CGM_EXP_INRANGE: return exp(d);
    case CGM_LOG: return log(d);
    case CGM_LOG1P: return log1p(d);
    case CGM_EXPM1: return expm1(d);
    default: return tanh(d);
    }
}
static long double ref64(int f, double x) {
    long double d = x;
    switch (f) {
    case CGM_EXP: case CGM_EXP_INRANGE: return expl(d);
    case CGM_LOG: return logl(d);
    case CGM_LOG1P: return log1pl(d);
    case CGM_EXPM1: return expm1l(d);
    default: return tanhl(d);
    }
}

/* error of got in ulps of the reference's binade in the target format (p mantissa bits,
 * emin the smallest normal exponent, emax+1 the overflow binade); a result that overflows
 * counts as 2^(emax+1); NaN must match NaN */
static double ulp_err(long double got, long double ref, int p, int emin, int emax) {
    if (isnan(ref) || isnan(got)) return isnan(ref) && isnan(got) ? 0 : INFINITY;
    long double big = ldexpl(1.0L, emax + 1);
    if (isinf(ref) && isinf(got)) return ref == got ? 0 : INFINITY;
    if (isinf(got)) got = copysignl(big, got);
    if (fabsl(ref) > big) ref = copysignl(big, ref);   /* overflow in the target format */
    int e = ref == 0 ? emin : ilogbl(ref);
    if (e < emin) e = emin;
    if (e > emax) e = emax;
    return (double)(fabsl(got - ref) / ldexpl(1.0L, e - p + 1));
}

typedef struct {
    double max;
    double at;   /* argument of the largest error */
    long   n;
} stat;

static void account(stat *s, double e, double x) {
    s->n++;
    if (e > s->max || (isnan(e) && !isnan(s->max))) { s->max = e; s->at = x; }
}

/* runs every width of kernel (f, d) and the no-FMA build on x[0..n) (n a multiple of 16)
 * and accounts the errors against the references */
static void measure32(int f, const float *x, int64_t n, float *y, float *y2, stat *s, stat *snf) {
    kernels[f][0][0](n, x, y);
    for (int wi = 1; wi < 4; wi++) {
        kernels[f][0][wi](n, x, y2);
        for (int64_t i = 0; i < n; i++)
            if (memcmp(&y[i], &y2[i], 4)) {
                CHECK(0, "%s f32 width %d differs from width 1 at %a: %a vs %a", fname[f], widths[0][wi], x[i], y2[i], y[i]);
                break;
            }
    }
    if (nofma[f][0]) nofma[f][0](n, x, y2);
    for (int64_t i = 0; i < n; i++) {
        if (f == CGM_EXP_INRANGE && fabsf(x[i]) > INRANGE) continue;
        double r = ref32(f, x[i]);
        account(s, ulp_err(y[i], r, 24, -126, 127), x[i]);
        if (nofma[f][0]) account(snf, ulp_err(y2[i], r, 24, -126, 127), x[i]);
    }
}
static void measure64(int f, const double *x, int64_t n, double *y, double *y2, stat *s, stat *snf) {
    kernels[f][1][0](n, x, y);
    for (int wi = 1; wi < 4; wi++) {
        kernels[f][1][wi](n, x, y2);
        for (int64_t i = 0; i < n; i++)
            if (memcmp(&y[i], &y2[i], 8)) {
                CHECK(0, "%s f64 width %d differs from width 1 at %a: %a vs %a", fname[f], widths[1][wi], x[i], y2[i], y[i]);
                break;
            }
    }
    if (nofma[f][1]) nofma[f][1](n, x, y2);
    for (int64_t i = 0; i < n; i++) {
        if (f == CGM_EXP_INRANGE && fabs(x[i]) > INRANGE) continue;
        long double r = ref64(f, x[i]);
        account(s, ulp_err(y[i], r, 53, -1022, 1023), x[i]);
        if (nofma[f][1]) account(snf, ulp_err(y2[i], r, 53, -1022, 1023), x[i]);
    }
}

/* interesting ranges: [wide lo, hi], [narrow lo, hi] */
static const double ranges[NF][4] = {
    { -110, 92, -1, 1 },          /* exp (f64 adds its own edges below) */
    { 0, 16, 0.5, 2 },            /* log */
    { -1, 4, -0.3, 0.42 },        /* log1p */
    { -20, 20, -0.5, 0.5 },       /* expm1 */
    { -10, 10, -0.7, 0.7 },       /* tanh */
    { -80, 80, -1, 1 },           /* exp_inrange */
};

static int scale(void) {
    const char *s = getenv("NFC_MATH_SCALE");
    int k = s ? atoi(s) : 1;
    return k > 0 ? k : 1;
}

TEST(accuracy_f32) {
    int64_t dense = (SANITIZED ? 1 << 16 : 1 << 19) * (int64_t)scale();
    uint32_t stride = (SANITIZED ? 8191 : 1021) / (uint32_t)scale() | 1;
    int64_t nbits = ((int64_t)1 << 32) / stride + 1;
    int64_t cap = ((nbits > dense ? nbits : dense) + 15) & ~(int64_t)15;
    float *x = malloc(4 * (size_t)cap), *y = malloc(4 * (size_t)cap), *y2 = malloc(4 * (size_t)cap);
    for (int f = 0; f < NF; f++) {
        stat s = { 0, 0, 0 }, snf = { 0, 0, 0 };
        int64_t n = 0;
        for (uint64_t b = 0; b < ((uint64_t)1 << 32); b += stride) {
            uint32_t u = (uint32_t)b;
            memcpy(&x[n++], &u, 4);
        }
        while (n % 16) x[n++] = 1.0f;
        measure32(f, x, n, y, y2, &s, &snf);
        for (int r = 0; r < 2; r++) {
            double lo = ranges[f][2 * r], hi = ranges[f][2 * r + 1];
            for (int64_t i = 0; i < dense; i++) x[i] = (float)(lo + (hi - lo) * (double)i / (double)(dense - 1));
            measure32(f, x, dense, y, y2, &s, &snf);
        }
        printf("    max ulp %s f32 = %.3f (at %.9g, %ld points)", fname[f], s.max, s.at, s.n);
        if (nofma[f][0]) printf("; without FMA %.3f (at %.9g)", snf.max, snf.at);
        printf("\n");
        CHECK(s.max <= bound[f][0], "%s f32: %.3f ulp at %a > %.1f", fname[f], s.max, s.at, bound[f][0]);
        if (nofma[f][0]) CHECK(snf.max <= bound[f][0], "%s f32 without FMA: %.3f ulp at %a", fname[f], snf.max, snf.at);
    }
    free(x);
    free(y);
    free(y2);
}

static uint64_t rs = 0x9e3779b97f4a7c15ull;
static uint64_t rnd64(void) {
    uint64_t z = (rs += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

TEST(accuracy_f64) {
    int64_t npts = (SANITIZED ? 1 << 15 : 1 << 18) * (int64_t)scale();
    double *x = malloc(8 * (size_t)npts), *y = malloc(8 * (size_t)npts), *y2 = malloc(8 * (size_t)npts);
    for (int f = 0; f < NF; f++) {
        stat s = { 0, 0, 0 }, snf = { 0, 0, 0 };
        /* random bit patterns: every sign and exponent; then random exponents near 0 */
        for (int64_t i = 0; i < npts; i++) {
            uint64_t u = rnd64();
            memcpy(&x[i], &u, 8);
        }
        measure64(f, x, npts, y, y2, &s, &snf);
        for (int64_t i = 0; i < npts; i++) {
            uint64_t u = rnd64();
            x[i] = ldexp((double)(u >> 11) * 0x1p-53, -(int)(u & 63)) * ((u >> 6) & 1 ? -1 : 1);
        }
        measure64(f, x, npts, y, y2, &s, &snf);
        for (int r = 0; r < 2; r++) {
            double lo = ranges[f][2 * r], hi = ranges[f][2 * r + 1];
            if (f == CGM_EXP && r == 0) { lo = -746; hi = 710; }
            for (int64_t i = 0; i < npts; i++) x[i] = lo + (hi - lo) * (double)i / (double)(npts - 1);
            measure64(f, x, npts, y, y2, &s, &snf);
        }
        printf("    max ulp %s f64 = %.3f (at %.17g, %ld points)", fname[f], s.max, s.at, s.n);
        if (nofma[f][1]) printf("; without FMA %.3f (at %.17g)", snf.max, snf.at);
        printf("\n");
        CHECK(s.max <= bound[f][1], "%s f64: %.3f ulp at %a > %.1f", fname[f], s.max, s.at, bound[f][1]);
        if (nofma[f][1]) CHECK(snf.max <= bound[f][1], "%s f64 without FMA: %.3f ulp at %a", fname[f], snf.max, snf.at);
    }
    free(x);
    free(y);
    free(y2);
}

/* ------------------------------------------------------------------ special values */

static int same(double a, double b) { return (isnan(a) && isnan(b)) || (a == b && signbit(a) == signbit(b)); }

static void expect(int f, double x, double want) {
    for (int d = 0; d < 2; d++)
        for (int wi = 0; wi < 4; wi++) {
            double got;
            if (d) {
                double in[16], out[16];
                for (int i = 0; i < 16; i++) in[i] = x;
                kernels[f][1][wi](widths[1][wi], in, out);
                got = out[widths[1][wi] - 1];
            } else {
                float in[16], out[16];
                for (int i = 0; i < 16; i++) in[i] = (float)x;
                kernels[f][0][wi](widths[0][wi], in, out);
                got = out[widths[0][wi] - 1];
            }
            CHECK(same(got, want), "%s(%a) %s width %d = %a, want %a", fname[f], x, d ? "f64" : "f32", widths[d][wi], got, want);
        }
}
/* per dtype */
static void expect_dt(int f, int d, double x, double want) {
    for (int wi = 0; wi < 4; wi++) {
        double got;
        if (d) {
            double in[16], out[16];
            for (int i = 0; i < 16; i++) in[i] = x;
            kernels[f][1][wi](widths[1][wi], in, out);
            got = out[0];
        } else {
            float in[16], out[16];
            for (int i = 0; i < 16; i++) in[i] = (float)x;
            kernels[f][0][wi](widths[0][wi], in, out);
            got = out[0];
        }
        CHECK(same(got, want), "%s(%a) %s width %d = %a, want %a", fname[f], x, d ? "f64" : "f32", widths[d][wi], got, want);
    }
}

TEST(special_values) {
    double inf = INFINITY, nan = NAN;
    for (int f = 0; f < NF; f++) expect(f, nan, nan);
    expect(CGM_EXP_INRANGE, 0, 1);
    expect(CGM_EXP_INRANGE, -0.0, 1);
    expect(CGM_EXP, -inf, 0);
    expect(CGM_EXP, inf, inf);
    expect(CGM_EXP, 0, 1);
    expect(CGM_EXP, -0.0, 1);
    expect(CGM_EXP, -1000, 0);
    expect(CGM_EXP, 1000, inf);
    expect(CGM_LOG, 0, -inf);
    expect(CGM_LOG, -0.0, -inf);
    expect(CGM_LOG, -1, nan);
    expect(CGM_LOG, -inf, nan);
    expect(CGM_LOG, inf, inf);
    expect(CGM_LOG, 1, 0);
    expect(CGM_LOG1P, -1, -inf);
    expect(CGM_LOG1P, -2, nan);
    expect(CGM_LOG1P, -inf, nan);
    expect(CGM_LOG1P, inf, inf);
    expect(CGM_LOG1P, 0, 0);
    expect(CGM_LOG1P, -0.0, -0.0);
    expect(CGM_EXPM1, -inf, -1);
    expect(CGM_EXPM1, inf, inf);
    expect(CGM_EXPM1, 0, 0);
    expect(CGM_EXPM1, -0.0, -0.0);
    expect(CGM_EXPM1, -1000, -1);
    expect(CGM_EXPM1, 1000, inf);
    expect(CGM_TANH, inf, 1);
    expect(CGM_TANH, -inf, -1);
    expect(CGM_TANH, 0, 0);
    expect(CGM_TANH, -0.0, -0.0);
    expect(CGM_TANH, 30, 1);
    expect(CGM_TANH, -30, -1);
    expect(CGM_TANH, 1000, 1);
    /* tiny arguments: f(x) = x (log1p, expm1, tanh) */
    expect(CGM_LOG1P, 0x1p-60, 0x1p-60);
    expect(CGM_EXPM1, -0x1p-60, -0x1p-60);
    expect(CGM_TANH, 0x1p-30, 0x1p-30);
    expect(CGM_TANH, -0x1p-140, -0x1p-140);   /* f32: subnormal; f64: normal */
    /* overflow and underflow thresholds, per dtype (the boundary arguments are checked
     * against C's exp in long double first) */
    float below32 = 88.72283172607421875f, above32 = 88.72283935546875f;   /* ln(FLT_MAX) = 88.7228390... */
    double below64 = 709.782712893383, above64 = 709.782712893385;          /* ln(DBL_MAX) = 709.78271289338397 */
    CHECK(expl(below32) < 3.40282347e38L && expl(above32) > 3.40282347e38L, "f32 threshold constants");
    CHECK(expl(below64) < 1.7976931348623157e308L && expl(above64) > 1.7976931348623157e308L, "f64 threshold constants");
    for (int f = CGM_EXP; f <= CGM_EXPM1; f += CGM_EXPM1 - CGM_EXP) {
        for (int wi = 0; wi < 4; wi++) {
            float in[16], out[16];
            double in64[16], out64[16];
            for (int i = 0; i < 16; i++) in[i] = i & 1 ? above32 : below32, in64[i] = i & 1 ? above64 : below64;
            kernels[f][0][wi](16, in, out);
            kernels[f][1][wi](16, in64, out64);
            CHECK(isfinite(out[0]) && out[0] > 3.4e38f && out[1] == INFINITY, "%s f32 overflow: %a %a", fname[f], out[0], out[1]);
            CHECK(isfinite(out64[0]) && out64[0] > 1.797e308 && out64[1] == INFINITY, "%s f64 overflow: %a %a", fname[f],
                  out64[0], out64[1]);
        }
    }
    expect_dt(CGM_EXP, 0, -103.0, 0x1p-149);     /* e^-103 = 1.32 * 2^-149: subnormal, rounded */
    expect_dt(CGM_EXP, 0, -104.0, 0);            /* e^-104 < 2^-150: rounds to 0 */
    expect_dt(CGM_EXP, 0, -100.0, 0x1p-149 * nearbyint(exp(-100.0) / 0x1p-149));
    expect_dt(CGM_EXP, 1, -745.2, 0);            /* < 2^-1075 */
    expect_dt(CGM_EXP, 1, -745.0, 0x1p-1074);    /* 0.57 * 2^-1074 */
    expect_dt(CGM_EXPM1, 0, -17.5, -1);          /* -1 + 2.5e-8: rounds to -1 */
    expect_dt(CGM_EXPM1, 1, -38, -1);
}

/* ------------------------------------------------------------------ a whole flow without Sleef */

typedef void (*kern_fn)(int64_t n, int64_t row0, int64_t seed, const void *const *args, const double *scalars,
                        void *const *outs, const void *params, void *ws);

static nfc_jit *J;

static int file_contains(const char *path, const char *s) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *t = malloc((size_t)len + 1);
    size_t got = fread(t, 1, (size_t)len, fp);
    t[got] = 0;
    fclose(fp);
    int r = strstr(t, s) != NULL;
    free(t);
    return r;
}

static int close_enough(double got, double ref, double tol) {
    if (isnan(ref) || isnan(got)) return isnan(ref) && isnan(got);
    if (isinf(ref) || isinf(got)) return got == ref;
    double s = fabs(ref) > 1 ? fabs(ref) : 1;
    return fabs(got - ref) <= tol * s;
}

/* runs program q of the JIT module on n rows of data given in double; outs in double */
static void run_kernel(kern_fn fn, int64_t ws_bytes, int dt, const tprog *p, int64_t np, int64_t n, double *const *args,
                       const double *scalars, const double *params, double **outs) {
    size_t es = dt == DT_F64 ? 8 : 4;
    void *a[TPROG_MAX_IO] = { 0 }, *o[TPROG_MAX_IO + 1] = { 0 };
    size_t ocnt[TPROG_MAX_IO + 1];
    for (int i = 0; i < p->nargs; i++) {
        size_t cnt = (size_t)(n * p->arg_w[i]);
        a[i] = malloc(cnt * es + 1);
        for (size_t e = 0; e < cnt; e++) {
            if (es == 8) ((double *)a[i])[e] = args[i][e];
            else ((float *)a[i])[e] = (float)args[i][e];
        }
    }
    int no = p->nouts + (p->ngrad ? 1 : 0);
    for (int i = 0; i < no; i++) {
        ocnt[i] = (size_t)(i < p->nouts ? n * p->nodes[p->outs[i]].w : p->param_total);
        o[i] = malloc(ocnt[i] * es + 1);
    }
    void *pr = malloc((size_t)(np + 1) * es);
    for (int64_t e = 0; e < np; e++) {
        if (es == 8) ((double *)pr)[e] = params[e];
        else ((float *)pr)[e] = (float)params[e];
    }
    size_t wsb = (size_t)(ws_bytes > 0 ? ws_bytes : 64);
    void *ws = aligned_alloc(64, (wsb + 63) & ~(size_t)63);
    fn(n, 11, 99, (const void *const *)a, scalars, o, pr, ws);
    free(ws);
    for (int i = 0; i < no; i++) {
        for (size_t e = 0; e < ocnt[i]; e++) outs[i][e] = es == 8 ? ((double *)o[i])[e] : ((float *)o[i])[e];
        free(o[i]);
    }
    for (int i = 0; i < p->nargs; i++) free(a[i]);
    free(pr);
}

static uint64_t urs = 12345;
static double uniform(double lo, double hi) {
    urs = urs * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (double)(urs >> 11) * 0x1p-53;
}

TEST(flow_without_sleef_equals_interpreter) {
    static const char *const files[] = { "examples/moons.flow", "examples/custom.flow" };
    /* the ASan build compiles only the small one (LLVM is slow under ASan) */
    for (size_t fi = SANITIZED ? 1 : 0; fi < sizeof files / sizeof files[0]; fi++) {
        arena ar;
        arena_init(&ar);
        diag_ctx dc;
        diag_init(&dc, &ar);
        sema_result res;
        memset(&res, 0, sizeof res);
        if (front_compile_file(&dc, files[fi], &res, NULL) || res.nflows < 1) {
            CHECK(0, "%s does not compile", files[fi]);
            arena_free(&ar);
            continue;
        }
        ir_graph *g = res.flows[0];
        derived dv;
        tprog *gp = NULL;
        char err[1024] = "";
        if (derive_all(g, &ar, &dv, err, sizeof err) || grad_build(g, &ar, &gp, err, sizeof err)) {
            CHECK(0, "%s: %s", files[fi], err);
            arena_free(&ar);
            continue;
        }
        const tprog *progs[PROG_COUNT + 1];
        for (int k = 0; k < PROG_COUNT; k++) progs[k] = dv.p[k];
        progs[PROG_COUNT] = gp;
        int64_t np = tir_param_offsets(g, NULL), *poff = calloc((size_t)g->np + 1, sizeof *poff);
        tir_param_offsets(g, poff);
        double *params = malloc(sizeof(double) * (size_t)(np + 1));
        init_params(g, params, 7, 0.5);
        for (int cfg = 0; cfg < 2; cfg++) {
            int dt = cfg == 0 ? DT_F64 : DT_F32;
            cg_options o;
            cg_default_options(&o);
            o.dtype = dt;
            o.vector_width = 0;
            o.opt_level = cfg == 0 && !SANITIZED ? 2 : 0;
            o.use_sleef = 0;
            cg_module *m = NULL;
            char prefix[32];
            snprintf(prefix, sizeof prefix, "ns%d_%zu", cfg, fi);
            int rc = cg_build(progs, PROG_COUNT + 1, g, prefix, &o, &m, err, sizeof err);
            CHECK(rc == 0, "%s: %s", files[fi], err);
            if (rc) continue;
            char ll[64];
            snprintf(ll, sizeof ll, "/tmp/nfc_test_math_%d.ll", (int)getpid());
            CHECK(cg_emit_file(m, ll, CG_EMIT_LLVM, err, sizeof err) == 0, "%s", err);
            CHECK(file_contains(ll, "Sleef_") == 0, "%s: use_sleef = 0 but the IR calls Sleef", files[fi]);
            remove(ll);
            int64_t wsb[PROG_COUNT + 1];
            int V = cg_vector_width(m);
            char names[PROG_COUNT + 1][96];
            for (int q = 0; q <= PROG_COUNT; q++) {
                wsb[q] = cg_workspace_bytes(m, q);
                snprintf(names[q], sizeof names[q], "%s", cg_function_name(m, q));
            }
            if (jit_add(J, m, err, sizeof err)) {
                CHECK(0, "%s", err);
                continue;
            }
            for (int q = 0; q <= PROG_COUNT; q++) {
                const tprog *p = progs[q];
                kern_fn fn = (kern_fn)jit_lookup(J, names[q], err, sizeof err);
                CHECK(fn != NULL, "%s", err);
                if (!fn) continue;
                int64_t n = 3 * V + 5;
                double *args[TPROG_MAX_IO], *outs[TPROG_MAX_IO + 1], *ref[TPROG_MAX_IO + 1];
                double scalars[4] = { 0.8, 0.8, 0.8, 0.8 };
                for (int a = 0; a < p->nargs; a++) {
                    args[a] = malloc(sizeof(double) * (size_t)(n * p->arg_w[a]));
                    for (int64_t e = 0; e < n * p->arg_w[a]; e++) {
                        double u = uniform(-1.5, 1.5);
                        args[a][e] = dt == DT_F32 ? (double)(float)u : u;
                    }
                }
                double *pr = malloc(sizeof(double) * (size_t)(np + 1));
                for (int64_t e = 0; e < np; e++) pr[e] = dt == DT_F32 ? (double)(float)params[e] : params[e];
                int no = p->nouts + (p->ngrad ? 1 : 0);
                for (int o2 = 0; o2 < no; o2++) {
                    size_t cnt = (size_t)(o2 < p->nouts ? n * p->nodes[p->outs[o2]].w : p->param_total);
                    outs[o2] = malloc(sizeof(double) * cnt);
                    ref[o2] = malloc(sizeof(double) * cnt);
                }
                rc = interp_run(p, n, 11, 99, (const double *const *)args, scalars, ref, pr, poff, err, sizeof err);
                CHECK(rc == 0, "interp %s: %s", p->name, err);
                run_kernel(fn, wsb[q], dt, p, np, n, args, scalars, pr, outs);
                double tol = dt == DT_F32 ? 1e-4 : 1e-10;
                for (int o2 = 0; o2 < no && rc == 0; o2++) {
                    int64_t cnt = o2 < p->nouts ? n * p->nodes[p->outs[o2]].w : p->param_total;
                    int bad = 0;
                    for (int64_t e = 0; e < cnt && bad < 3; e++)
                        if (!close_enough(outs[o2][e], ref[o2][e], tol)) {
                            bad++;
                            CHECK(0, "%s %s %s V=%d out %d elem %lld: %.17g vs interp %.17g", files[fi], p->name,
                                  dt == DT_F32 ? "f32" : "f64", V, o2, (long long)e, outs[o2][e], ref[o2][e]);
                        }
                }
                for (int o2 = 0; o2 < no; o2++) {
                    free(outs[o2]);
                    free(ref[o2]);
                }
                for (int a = 0; a < p->nargs; a++) free(args[a]);
                free(pr);
            }
        }
        free(params);
        free(poff);
        arena_free(&ar);
    }
}

int main(void) {
    double t0 = (double)clock() / CLOCKS_PER_SEC;
    if (build_all()) {
        printf("FAIL build_kernels\n");
        return 1;
    }
    if (getenv("NFC_MATH_TIMING")) printf("# %.2f s CPU: kernels built\n", (double)clock() / CLOCKS_PER_SEC - t0);
    RUN(special_values);
    RUN(accuracy_f32);
    if (getenv("NFC_MATH_TIMING")) printf("# %.2f s CPU\n", (double)clock() / CLOCKS_PER_SEC - t0);
    RUN(accuracy_f64);
    if (getenv("NFC_MATH_TIMING")) printf("# %.2f s CPU\n", (double)clock() / CLOCKS_PER_SEC - t0);
    char err[512];
    if (jit_create(&J, err, sizeof err)) {
        printf("FAIL jit_create\n    %s\n", err);
        return 1;
    }
    RUN(flow_without_sleef_equals_interpreter);
    jit_free(J);
    LLVMOrcDisposeLLJIT(JM);
    if (getenv("NFC_MATH_TIMING")) printf("# %.2f s CPU\n", (double)clock() / CLOCKS_PER_SEC - t0);
    return t_done();
}

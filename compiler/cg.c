/* compiler/cg.c: tensor IR -> LLVM IR (see cg.h; design in docs/codegen.md).
 *
 * Input: verified tensor-IR programs, the flow graph (parameter shapes), options.
 * Output: a verified, optimized LLVM module with one kernel-ABI function per program.
 *
 * Shape of every generated function:
 *   entry:    pointers to params/constants/workspace slots of unbatched values; the
 *             unbatched nodes (params, constants, and anything computed only from them) are
 *             computed once, with scalar loops, into the workspace ("prologue").
 *   tiles:    for base = 0; base < n; base += V: every batched value of width w lives in
 *             the workspace as w vectors of V lanes (feature-major, lane = row in tile);
 *             ARG k is gathered (masked: lanes past n are zero) from row-major [n, w],
 *             the batched nodes run as loops over features of <V x T> operations (a
 *             value used once by an elementwise node is computed there, in registers,
 *             without a slot: plan_fusion), sums over the batch (TF_RED) add the valid
 *             lanes to per-lane accumulators, and the outputs are scattered back
 *             (masked: only valid rows are written).
 *   epilogue: the accumulators summed over lanes, the unbatched nodes computed from them
 *             (tir_sections), and the gradient outputs (outs[nouts], laid out like params).
 * Loops of the tensor IR become LLVM loops (basic blocks and phis) around the body's
 * code, with the carried state in the workspace.
 *
 * Ownership: cg_module owns the ORC thread-safe context, the module and the target machine;
 * jit_add takes the context and the module (cg_release_llvm) and frees the rest.
 */
#include "cg.h"
#include "cg_math.h"
#include "randn.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/BitWriter.h>
#include <llvm-c/Linker.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

struct cg_module {
    LLVMOrcThreadSafeContextRef tsc;
    LLVMContextRef              ctx;   /* owned by tsc */
    LLVMModuleRef               mod;
    LLVMTargetMachineRef        tm;
    char                       *triple, *cpu, *features;
    int                         V, dtype, nprogs;
    int64_t                    *ws;
    int64_t                    *tile_ws;  /* per program: the part of ws for batched values */
    int                        *nfused;   /* per program: nodes without a slot (fusion) */
    char                      **names;
    int                         nsegs;    /* segment functions compiled (all programs) */
    int                         nshared;  /* segment calls that reuse one of them */
};

/* ---------------------------------------------------------------- LLVM setup */

static pthread_once_t cg_once = PTHREAD_ONCE_INIT;
static void cg_init_once(void) {
    LLVMInitializeAllTargetInfos();
    LLVMInitializeAllTargets();
    LLVMInitializeAllTargetMCs();
    LLVMInitializeAllAsmPrinters();
    LLVMInitializeAllAsmParsers();
}
void cg_llvm_init(void) { pthread_once(&cg_once, cg_init_once); }

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);   /* out of memory: a message and an abort (base.h) */
    memcpy(d, s, n);
    return d;
}

/* Copies an LLVM error's message into err and consumes the error. */
static void take_error(LLVMErrorRef e, const char *what, char *err, size_t errlen) {
    char *msg = LLVMGetErrorMessage(e);
    snprintf(err, errlen, "%s: %s", what, msg ? msg : "unknown LLVM error");
    LLVMDisposeErrorMessage(msg);
}

/* ---------------------------------------------------------------- target ISA */

enum { ARCH_OTHER, ARCH_X86, ARCH_AARCH64 };
typedef struct {
    int arch;
    int sse41, avx, avx2, fma, avx512f; /* x86 */
    int neon;                           /* aarch64 */
} isa_t;

static int triple_arch(const char *t) {
    if (!strncmp(t, "x86_64", 6) || !strncmp(t, "amd64", 5) || (t[0] == 'i' && strchr("3456", t[1]) && !strncmp(t + 2, "86", 2)))
        return ARCH_X86;
    if (!strncmp(t, "aarch64", 7) || !strncmp(t, "arm64", 5)) return ARCH_AARCH64;
    return ARCH_OTHER;
}

/* x86 CPU names of LLVM 19 (llc -mcpu=help) by the vector ISA level they imply:
 * 4 = AVX-512F, 3 = AVX2 + FMA, 2 = AVX, 1 = SSE4.1; anything else is treated as SSE2. */
static const char *const x86_lvl4[] = {
    "cannonlake", "cascadelake", "cooperlake", "emeraldrapids", "graniterapids", "graniterapids-d",
    "graniterapids_d", "icelake-client", "icelake-server", "icelake_client", "icelake_server", "knl", "knm",
    "mic_avx512", "rocketlake", "sapphirerapids", "skx", "skylake-avx512", "skylake_avx512", "tigerlake",
    "x86-64-v4", "znver4", "znver5", NULL };
static const char *const x86_lvl3[] = {
    "alderlake", "arrowlake", "arrowlake-s", "arrowlake_s", "bdver4", "broadwell", "clearwaterforest",
    "core-avx2", "core_4th_gen_avx", "core_4th_gen_avx_tsx", "core_5th_gen_avx", "core_5th_gen_avx_tsx",
    "gracemont", "grandridge", "haswell", "lunarlake", "meteorlake", "pantherlake", "raptorlake",
    "sierraforest", "skylake", "x86-64-v3", "znver1", "znver2", "znver3", NULL };
static const char *const x86_lvl2[] = {
    "bdver1", "bdver2", "bdver3", "btver2", "core-avx-i", "core_2nd_gen_avx", "core_3rd_gen_avx",
    "corei7-avx", "ivybridge", "sandybridge", NULL };
static const char *const x86_lvl1[] = {
    "atom_sse4_2", "atom_sse4_2_movbe", "core_2_duo_sse4_1", "core_aes_pclmulqdq", "core_i7_sse4_2",
    "corei7", "goldmont", "goldmont-plus", "goldmont_plus", "nehalem", "penryn", "silvermont", "slm",
    "tremont", "westmere", "x86-64-v2", NULL };

static const char *const x86_lvl0[] = {
    "amdfam10", "athlon", "athlon-4", "athlon-fx", "athlon-mp", "athlon-tbird", "athlon-xp", "athlon64",
    "athlon64-sse3", "atom", "barcelona", "bonnell", "btver1", "c3", "c3-2", "core2", "core_2_duo_ssse3",
    "generic", "geode", "i386", "i486", "i586", "i686", "k6", "k6-2", "k6-3", "k8", "k8-sse3", "lakemont",
    "nocona", "opteron", "opteron-sse3", "pentium", "pentium-m", "pentium-mmx", "pentium2", "pentium3",
    "pentium3m", "pentium4", "pentium4m", "pentium_4", "pentium_4_sse3", "pentium_ii", "pentium_iii",
    "pentium_iii_no_xmm_regs", "pentium_m", "pentium_mmx", "pentium_pro", "pentiumpro", "prescott",
    "winchip-c6", "winchip2", "x86-64", "yonah", NULL };

static int in_list(const char *const *l, const char *s) {
    for (; *l; l++)
        if (!strcmp(*l, s)) return 1;
    return 0;
}

static void isa_feature(isa_t *a, const char *f, size_t len, int on) {
#define IS(name) (len == strlen(name) && !memcmp(f, name, len))
    if (a->arch == ARCH_AARCH64) {
        if (IS("neon")) a->neon = on;
        return;
    }
    if (a->arch != ARCH_X86) return;
    if (on) {
        if (IS("avx512f")) a->avx512f = a->avx2 = a->fma = a->avx = a->sse41 = 1;
        else if (IS("avx2")) a->avx2 = a->avx = a->sse41 = 1;
        else if (IS("fma")) a->fma = a->avx = a->sse41 = 1;
        else if (IS("avx")) a->avx = a->sse41 = 1;
        else if (IS("sse4.1") || IS("sse4.2")) a->sse41 = 1;
    } else {
        if (IS("avx512f")) a->avx512f = 0;
        else if (IS("avx2")) a->avx2 = a->avx512f = 0;
        else if (IS("fma")) a->fma = a->avx512f = 0;
        else if (IS("avx") || IS("sse4.2")) a->avx = a->avx2 = a->fma = a->avx512f = 0;
        else if (IS("sse4.1") || IS("ssse3") || IS("sse3") || IS("sse2"))
            a->sse41 = a->avx = a->avx2 = a->fma = a->avx512f = 0;
    }
#undef IS
}

/* The vector ISA of (triple, cpu, features): the CPU's level from the table above, then the
 * +/- entries of the feature string in order. Unknown CPU names get the baseline. */
static isa_t isa_of(const char *triple, const char *cpu, const char *features) {
    isa_t a;
    memset(&a, 0, sizeof a);
    a.arch = triple_arch(triple);
    if (a.arch == ARCH_AARCH64) a.neon = 1;
    if (a.arch == ARCH_X86) {
        int lvl = in_list(x86_lvl4, cpu) ? 4 : in_list(x86_lvl3, cpu) ? 3 : in_list(x86_lvl2, cpu) ? 2
                : in_list(x86_lvl1, cpu) ? 1 : 0;
        a.sse41 = lvl >= 1;
        a.avx = lvl >= 2;
        a.avx2 = a.fma = lvl >= 3;
        a.avx512f = lvl >= 4;
    }
    for (const char *f = features; f && *f;) {
        const char *e = strchr(f, ',');
        size_t len = e ? (size_t)(e - f) : strlen(f);
        if (len > 1 && (f[0] == '+' || f[0] == '-')) isa_feature(&a, f + 1, len - 1, f[0] == '+');
        f += len + (e ? 1 : 0);
    }
    return a;
}

static int native_bytes(const isa_t *a) {
    if (a->arch == ARCH_X86) return a->avx512f ? 64 : a->avx ? 32 : 16;
    return 16;
}

/* ---------------------------------------------------------------- codegen state */

enum { LOOP_MAX_PHI = 32 };   /* accumulators of an RFOR loop: products' blocks (16), tn_kernel (24) */
typedef struct {
    LLVMBasicBlockRef hdr, exit;
    LLVMValueRef      iv;
    LLVMValueRef      phi[LOOP_MAX_PHI];
    int               nphi;
    int64_t           n, k;      /* RFOR unrolled: end, current constant index */
    LLVMValueRef     *acc;       /* RFOR: the accumulators */
} cgloop;

typedef struct {
    const cg_options *o;
    isa_t             isa;
    LLVMContextRef    C;
    LLVMModuleRef     M;
    LLVMBuilderRef    b;
    LLVMTypeRef       T, VT, i32, i64, ptr, f64, vi32;
    int               V, esz, valign, f64mode;
    int64_t           unroll;    /* FOR loops up to this trip count are emitted straight-line */
    LLVMValueRef      fn;
    LLVMValueRef      a_n, a_row0, a_seed, a_args, a_scalars, a_outs, a_params, a_ws;
    const tprog      *p;
    const int64_t    *poff;
    int64_t          *slot, *aux;    /* byte offsets in ws (-1: none); aux: LU diagonal */
    int64_t           tn_scratch;    /* byte offset in ws of the MATMUL_TN scratch */
    int64_t          *dgrad;         /* a sum over the batch that is only a gradient output:
                                        its offset in the gradient array (no slot), else -1 */
    LLVMValueRef     *ubase;         /* unbatched nodes: pointer to [rows, w] of T */
    char             *live;
    char             *sep;           /* LOOP_END: own slot (its LOOP_BEGIN is used after it) */
    int8_t           *sec;           /* tir_sections: prologue, batched, epilogue */
    int8_t           *virt;          /* fusion (plan_fusion): VIRT_EW / VIRT_MM nodes have no slot */
    int32_t          *rmm;           /* a materialized root: the virtual product in its tree, or -1 */
    int               fmm;           /* while a fused product is emitted: that product, whose value */
    LLVMValueRef      facc;          /* at the current output feature is facc (else fmm = -1) */
    int               nfused;        /* virtual nodes of the program */
    int64_t           tile_ws;       /* bytes of the workspace's tile part (plan_tile_slots) */
    int               in_tiles;      /* the tile section is being emitted */
    int               pairs;         /* tile pairs (docs/codegen.md, "Tile pairs"): a segment of
                                        the tile loop computes two tiles, each with its own copy
                                        of the tile part of the workspace; its products for both
                                        at once (pair_mm), its other nodes for one, then the
                                        other (emit_pair) */
    int               pair_mm;       /* a product of both tiles is being emitted */
    LLVMValueRef      pt_tws[2], pt_base[2], pt_mask[2];   /* the pair's tiles (tile_ctx) */
    LLVMValueRef      a_tws;         /* the current tile's copy: ws, or ws + tile_ws (slot
                                        offsets count from ws, the persistent part included) */
    LLVMValueRef      argp[TPROG_MAX_IO], outp[TPROG_MAX_IO], gradp;
    LLVMValueRef      tbase, tmask;  /* current tile */
    cgloop            trip;          /* the tensor-IR loop being emitted (loops do not nest) */
    char             *err;
    size_t            errlen;
    int               failed;
    int               seg_nodes;     /* batched nodes per segment function (0: no segments) */
    LLVMBasicBlockRef seg_caller;    /* the segment being built: where the main function calls it */
    LLVMValueRef      seg_fn;
    LLVMBasicBlockRef seg_entry, seg_body;   /* its offset loads, and its code */
    char              seg_name[512];         /* its name if its code is new */
    int               seg_ctx_own;           /* its module has a context of its own */
    LLVMModuleRef     mainM;         /* the cg_module's module, context and builder (x->M, x->C */
    LLVMContextRef    mainC;         /* and x->b are a segment's own while one is built with */
    LLVMBuilderRef    mainB;         /* o->segment_sink, in a context of its own: segtsc) */
    cg_target         tgt;           /* for o->segment_sink */
    /* without a sink, new segments' modules wait here to be linked into mainM (link_pending):
     * merged in pairs of equal rank, as a binary counter, so that each link's cost (LLVM's
     * linker walks the whole destination module) stays O(N log N) in all, not O(N^2) */
    LLVMModuleRef     pend[64];
    int               prank[64], npend;
    LLVMValueRef     *segconst;      /* CONSTTENSOR globals copied into the segment's module */
    /* relocatable segments (docs/codegen.md, "Shared segments"): inside a segment every
     * workspace, parameter and gradient offset is loaded from the segment's offset table
     * (its last argument) in its entry block, so layers of the same shape give the same IR,
     * which is compiled once and called with each layer's table */
    int               reloc;         /* a segment is being built */
    LLVMBuilderRef    ob;            /* at the end of the segment's entry block */
    LLVMValueRef      offs;          /* the table argument */
    struct segoff    *so;            /* the offsets the segment asked for, in table order */
    int               nso, cap_so;
    struct segcode   *sc;            /* the segments compiled so far (all programs of the build) */
    int               nsc, cap_sc;
    uint64_t         *sig;           /* node_sig's memo (0: not yet) */
    LLVMValueRef     *calls;         /* the section's segment calls: function, table, ... */
    int               ncalls, cap_calls;
    int               nshared;       /* segment calls that reuse compiled code */
} cgx;

struct segoff { int kind, node; int64_t v; LLVMValueRef ld; };
struct segcode { uint64_t h; size_t len; char *txt; char *name; };
enum { OFF_SLOT, OFF_AUX, OFF_AM, OFF_PARAM, OFF_GRAD };

enum { VIRT_EW = 1, VIRT_MM = 2 };   /* cgx.virt */

static void cg_fail(cgx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cg_fail(cgx *x, const char *fmt, ...) {
    if (x->failed) return;
    x->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->err, x->errlen, fmt, ap);
    va_end(ap);
}

static LLVMValueRef ci64(cgx *x, int64_t v) { return LLVMConstInt(x->i64, (unsigned long long)v, 1); }
static LLVMValueRef ci32(cgx *x, int32_t v) { return LLVMConstInt(x->i32, (unsigned long long)(int64_t)v, 1); }
static int nlanes(LLVMTypeRef ty) { return LLVMGetTypeKind(ty) == LLVMVectorTypeKind ? (int)LLVMGetVectorSize(ty) : 1; }

/* constant v of type ty (T or a vector of T) */
static LLVMValueRef cst(cgx *x, LLVMTypeRef ty, double v) {
    (void)x;
    int L = nlanes(ty);
    LLVMValueRef s = LLVMConstReal(L > 1 ? LLVMGetElementType(ty) : ty, v);
    if (L == 1) return s;
    LLVMValueRef e[64];
    for (int i = 0; i < L; i++) e[i] = s;
    return LLVMConstVector(e, (unsigned)L);
}

static LLVMValueRef splat(cgx *x, LLVMValueRef s) {
    if (x->V == 1) return s;
    if (LLVMIsConstant(s)) {
        LLVMValueRef e[64];
        for (int i = 0; i < x->V; i++) e[i] = s;
        return LLVMConstVector(e, (unsigned)x->V);
    }
    LLVMValueRef v = LLVMBuildInsertElement(x->b, LLVMGetPoison(x->VT), s, ci32(x, 0), "");
    return LLVMBuildShuffleVector(x->b, v, LLVMGetPoison(x->VT), LLVMConstNull(x->vi32), "splat");
}

/* floating-point ops carry only the `contract` fast-math flag (see docs/codegen.md) */
static LLVMValueRef fmf(LLVMValueRef v) {
    if (LLVMIsAInstruction(v) && LLVMCanValueUseFastMathFlags(v)) LLVMSetFastMathFlags(v, LLVMFastMathAllowContract);
    return v;
}
static LLVMValueRef fadd(cgx *x, LLVMValueRef a, LLVMValueRef b) { return fmf(LLVMBuildFAdd(x->b, a, b, "")); }
static LLVMValueRef fsub(cgx *x, LLVMValueRef a, LLVMValueRef b) { return fmf(LLVMBuildFSub(x->b, a, b, "")); }
static LLVMValueRef fmul(cgx *x, LLVMValueRef a, LLVMValueRef b) { return fmf(LLVMBuildFMul(x->b, a, b, "")); }
static LLVMValueRef fdiv(cgx *x, LLVMValueRef a, LLVMValueRef b) { return fmf(LLVMBuildFDiv(x->b, a, b, "")); }
static LLVMValueRef fneg(cgx *x, LLVMValueRef a) { return fmf(LLVMBuildFNeg(x->b, a, "")); }
static LLVMValueRef fcmp(cgx *x, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFCmp(x->b, p, a, b, ""); }
static LLVMValueRef sel(cgx *x, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildSelect(x->b, c, a, b, ""); }

static LLVMValueRef gep(cgx *x, LLVMTypeRef ety, LLVMValueRef base, LLVMValueRef idx) {
    return LLVMBuildGEP2(x->b, ety, base, &idx, 1, "");
}
static LLVMValueRef load(cgx *x, LLVMTypeRef ty, LLVMValueRef p, int align) {
    LLVMValueRef v = LLVMBuildLoad2(x->b, ty, p, "");
    LLVMSetAlignment(v, (unsigned)align);
    return v;
}
static void store(cgx *x, LLVMValueRef v, LLVMValueRef p, int align) {
    LLVMValueRef s = LLVMBuildStore(x->b, v, p);
    LLVMSetAlignment(s, (unsigned)align);
}

/* declaration of an external pure function (libm, Sleef) */
static LLVMValueRef pure_fn(cgx *x, const char *name, LLVMTypeRef fty) {
    LLVMValueRef f = LLVMGetNamedFunction(x->M, name);
    if (f) return f;
    f = LLVMAddFunction(x->M, name, fty);
    static const char *const attrs[] = { "nounwind", "willreturn", "nosync", "nofree" };
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++)
        LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex,
                                LLVMCreateEnumAttribute(x->C, LLVMGetEnumAttributeKindForName(attrs[i], strlen(attrs[i])), 0));
    /* memory(none): MemoryEffects encoding 0 */
    LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex,
                            LLVMCreateEnumAttribute(x->C, LLVMGetEnumAttributeKindForName("memory", 6), 0));
    return f;
}

static LLVMValueRef call1(cgx *x, const char *name, LLVMValueRef v) {
    LLVMTypeRef ty = LLVMTypeOf(v);
    LLVMTypeRef fty = LLVMFunctionType(ty, &ty, 1, 0);
    LLVMValueRef f = pure_fn(x, name, fty);
    return LLVMBuildCall2(x->b, fty, f, &v, 1, "");
}

static LLVMValueRef intrinsic(cgx *x, const char *name, LLVMTypeRef *tys, int ntys, LLVMTypeRef *fty) {
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    *fty = LLVMIntrinsicGetType(x->C, id, tys, (size_t)ntys);
    return LLVMGetIntrinsicDeclaration(x->M, id, tys, (size_t)ntys);
}

static LLVMValueRef fabs_(cgx *x, LLVMValueRef v) {
    LLVMTypeRef ty = LLVMTypeOf(v), fty;
    LLVMValueRef f = intrinsic(x, "llvm.fabs", &ty, 1, &fty);
    return LLVMBuildCall2(x->b, fty, f, &v, 1, "");
}

/* ---------------------------------------------------------------- transcendental functions */

enum { MF_EXP, MF_LOG, MF_LOG1P, MF_EXPM1, MF_TANH };
static const char *const mf_name[] = { "exp", "log", "log1p", "expm1", "tanh" };

/* Sleef ISA suffix for a vector of L lanes on the target, or NULL if none fits (then the
 * vector is split). Never a variant that needs features the target lacks. */
static const char *sleef_isa(cgx *x, int L) {
    int bits = L * x->esz * 8;
    const isa_t *a = &x->isa;
    if (a->arch == ARCH_X86) {
        if (bits == 512 && a->avx512f) return "avx512f";
        if (bits == 256 && a->avx2 && a->fma) return "avx2";
        if (bits == 256 && a->avx) return "avx";
        if (bits == 128 && a->avx2 && a->fma) return "avx2128";
        if (bits == 128 && a->sse41) return "sse4";
        if (bits == 128) return "sse2";
    } else if (a->arch == ARCH_AARCH64) {
        if (bits == 128 && a->neon) return "advsimd";
    }
    return NULL;
}

static LLVMValueRef half_of(cgx *x, LLVMValueRef v, int L, int hi) {
    LLVMValueRef m[32];
    for (int i = 0; i < L / 2; i++) m[i] = ci32(x, i + (hi ? L / 2 : 0));
    return LLVMBuildShuffleVector(x->b, v, LLVMGetPoison(LLVMTypeOf(v)), LLVMConstVector(m, (unsigned)(L / 2)), "");
}

static LLVMValueRef mathf(cgx *x, int f, LLVMValueRef v) {
    LLVMTypeRef ty = LLVMTypeOf(v);
    int L = nlanes(ty);
    const char *ulp = f == MF_TANH ? "u35" : "u10";
    char name[64];
    /* f32 tanh is always nfc's own (cg_math.c): 1.3 ulp against Sleef's 3.5-ulp bound, and
     * inline, where Sleef's tanhf is a call that took 13% of a D = 64 RealNVP's log_prob */
    if (x->o->use_sleef && !(f == MF_TANH && !x->f64mode)) {
        if (L == 1) {
            snprintf(name, sizeof name, "Sleef_%s%s_%s", mf_name[f], x->f64mode ? "" : "f", ulp);
            return call1(x, name, v);
        }
        const char *isa = sleef_isa(x, L);
        if (isa) {
            snprintf(name, sizeof name, "Sleef_%s%s%d_%s%s", mf_name[f], x->f64mode ? "d" : "f", L, ulp, isa);
            return call1(x, name, v);
        }
        LLVMValueRef lo = mathf(x, f, half_of(x, v, L, 0)), hi = mathf(x, f, half_of(x, v, L, 1));
        LLVMValueRef m[64];
        for (int i = 0; i < L; i++) m[i] = ci32(x, i);
        return LLVMBuildShuffleVector(x->b, lo, hi, LLVMConstVector(m, (unsigned)L), "");
    }
    _Static_assert((int)CGM_EXP == MF_EXP && (int)CGM_LOG == MF_LOG && (int)CGM_LOG1P == MF_LOG1P
                   && (int)CGM_EXPM1 == MF_EXPM1 && (int)CGM_TANH == MF_TANH, "cg_math.h order");
    return cgm_emit(x->C, x->b, x->M, f, v);   /* own polynomials (cg_math.h), any L */
}

/* ---------------------------------------------------------------- loops */

static void loop_open(cgx *x, cgloop *L, LLVMValueRef start, LLVMValueRef end, int nphi, const LLVMValueRef *init) {
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(x->b);
    L->hdr = LLVMAppendBasicBlockInContext(x->C, x->fn, "loop");
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(x->C, x->fn, "body");
    L->exit = LLVMAppendBasicBlockInContext(x->C, x->fn, "exit");
    LLVMBuildBr(x->b, L->hdr);
    LLVMPositionBuilderAtEnd(x->b, L->hdr);
    L->iv = LLVMBuildPhi(x->b, x->i64, "i");
    LLVMAddIncoming(L->iv, &start, &pre, 1);
    L->nphi = nphi;
    for (int k = 0; k < nphi; k++) {
        LLVMValueRef in = init[k];
        L->phi[k] = LLVMBuildPhi(x->b, LLVMTypeOf(in), "acc");
        LLVMAddIncoming(L->phi[k], &in, &pre, 1);
    }
    LLVMBuildCondBr(x->b, LLVMBuildICmp(x->b, LLVMIntSLT, L->iv, end, ""), body, L->exit);
    LLVMPositionBuilderAtEnd(x->b, body);
}

static void loop_close(cgx *x, cgloop *L, const LLVMValueRef *next, int64_t step) {
    LLVMValueRef nx = LLVMBuildNSWAdd(x->b, L->iv, ci64(x, step), "");
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(x->b);
    LLVMBuildBr(x->b, L->hdr);
    LLVMAddIncoming(L->iv, &nx, &latch, 1);
    for (int k = 0; k < L->nphi; k++) {
        LLVMValueRef v = next[k];
        LLVMAddIncoming(L->phi[k], &v, &latch, 1);
    }
    LLVMPositionBuilderAtEnd(x->b, L->exit);
}

/* RFOR(x, L, start, end, j, acc, nacc) { body }: the body for j = start .. end-1 with nacc
 * accumulators acc[] (the body updates them; after the loop they hold the final values).
 * With constant bounds and at most x->unroll trips the body is emitted once per trip with a
 * constant j (short feature loops: less work for the optimizer); otherwise once inside an
 * LLVM loop with j its induction variable and the accumulators phis.
 * FOR(x, L, n, j) is the same without accumulators, for j = 0 .. n-1. */
static LLVMValueRef rfor_first(cgx *x, cgloop *L, LLVMValueRef start, LLVMValueRef end, LLVMValueRef *acc, int nacc) {
    L->hdr = NULL;
    L->acc = acc;
    if (LLVMIsAConstantInt(start) && LLVMIsAConstantInt(end)) {
        int64_t a = LLVMConstIntGetSExtValue(start), b = LLVMConstIntGetSExtValue(end);
        if (b - a <= x->unroll) {
            L->k = a;
            L->n = b;
            return a < b ? ci64(x, a) : NULL;
        }
    }
    loop_open(x, L, start, end, nacc, acc);
    for (int k = 0; k < nacc; k++) acc[k] = L->phi[k];
    return L->iv;
}
static LLVMValueRef rfor_next(cgx *x, cgloop *L) {
    if (L->hdr) {
        loop_close(x, L, L->acc, 1);
        for (int k = 0; k < L->nphi; k++) L->acc[k] = L->phi[k];
        return NULL;
    }
    return ++L->k < L->n ? ci64(x, L->k) : NULL;
}
#define RFOR(x, L, start, end, j, acc, nacc) \
    for (LLVMValueRef j = rfor_first((x), &(L), (start), (end), (acc), (nacc)); j; j = rfor_next((x), &(L)))
#define FOR(x, L, n, j) RFOR(x, L, ci64((x), 0), ci64((x), (n)), j, NULL, 0)

/* ---------------------------------------------------------------- value access */

static const tnode *ND(cgx *x, int i) { return &x->p->nodes[i]; }

/* Offset v (in elements) of what node i has of the given kind: a constant, or inside a
 * segment the value loaded from its offset table (one entry per kind and node, in the order
 * asked for; struct segoff). */
static LLVMValueRef soff(cgx *x, int kind, int i, int64_t v) {
    if (!x->reloc) return ci64(x, v);
    for (int k = 0; k < x->nso; k++)
        if (x->so[k].kind == kind && x->so[k].node == i) return x->so[k].ld;
    if (x->nso == x->cap_so) {
        int nc = x->cap_so ? 2 * x->cap_so : 32;
        struct segoff *ns = realloc(x->so, sizeof *ns * (size_t)nc);
        if (!ns) { cg_fail(x, "out of memory"); return ci64(x, v); }
        x->so = ns;
        x->cap_so = nc;
    }
    LLVMValueRef ld = LLVMBuildLoad2(x->ob, x->i64, LLVMBuildInBoundsGEP2(x->ob, x->i64, x->offs, (LLVMValueRef[]){ ci64(x, x->nso) }, 1, ""), "");
    LLVMSetAlignment(ld, 8);
    x->so[x->nso++] = (struct segoff){ kind, i, v, ld };
    return ld;
}
static LLVMValueRef slot_off(cgx *x, int i) { return soff(x, OFF_SLOT, i, x->slot[i] / x->esz); }
static LLVMValueRef aux_off(cgx *x, int i) { return soff(x, OFF_AUX, i, x->aux[i] / x->esz); }

/* pointer to feature j (i64 value) of batched node i in the tile */
static LLVMValueRef bptr(cgx *x, int i, LLVMValueRef j) {
    if (ND(x, i)->w == 1) j = ci64(x, 0);
    LLVMValueRef idx = LLVMBuildNSWAdd(x->b, slot_off(x, i), LLVMBuildNSWMul(x->b, j, ci64(x, x->V), ""), "");
    return LLVMBuildInBoundsGEP2(x->b, x->T, x->a_tws, &idx, 1, "");
}
static LLVMValueRef bload(cgx *x, int i, LLVMValueRef j) { return load(x, x->VT, bptr(x, i, j), x->valign); }
static void bstore(cgx *x, int i, LLVMValueRef j, LLVMValueRef v) { store(x, v, bptr(x, i, j), x->valign); }

/* A private constant array global of n elements of type ety in module M (unnamed_addr,
 * aligned to align bytes if not 0), the values from c. Every table the code generator
 * emits is one: constant tensors, index runs, offset tables, segment call tables. */
static LLVMValueRef const_array(LLVMModuleRef M, LLVMTypeRef ety, LLVMValueRef *c, uint64_t n, const char *name, unsigned align) {
    LLVMValueRef g = LLVMAddGlobal(M, LLVMArrayType2(ety, n), name);
    LLVMSetInitializer(g, LLVMConstArray2(ety, c, n));
    LLVMSetGlobalConstant(g, 1);
    LLVMSetLinkage(g, LLVMPrivateLinkage);
    LLVMSetUnnamedAddress(g, LLVMGlobalUnnamedAddr);
    if (align) LLVMSetAlignment(g, align);
    return g;
}

static LLVMValueRef const_tensor_global(cgx *x, int i) {
    const tnode *nd = ND(x, i);
    int64_t ne = (int64_t)nd->rows * nd->w;
    LLVMValueRef *c = xmalloc(sizeof(LLVMValueRef) * (size_t)(ne > 0 ? ne : 1));
    for (int64_t k = 0; k < ne; k++) c[k] = LLVMConstReal(x->T, x->p->consts[nd->aux + k]);
    LLVMValueRef g = const_array(x->M, x->T, c, (uint64_t)ne, "const", 64);
    free(c);
    return g;
}

/* a constant tensor in a segment built in its own module: a private copy there */
static LLVMValueRef seg_const(cgx *x, int i) {
    if (!x->segconst[i]) x->segconst[i] = const_tensor_global(x, i);
    return x->segconst[i];
}

/* the base of unbatched node i's [rows, w] values: a constant tensor's global, a parameter
 * in params, or the node's workspace slot. Built where it is used (not once in the entry
 * block), because a program's tile code is spread over several functions (segments). */
static LLVMValueRef ubase(cgx *x, int i) {
    const tnode *nd = ND(x, i);
    if (nd->op == T_CONSTTENSOR) {
        if (x->M != x->mainM) return seg_const(x, i);   /* in a segment */
        if (!x->ubase[i]) x->ubase[i] = const_tensor_global(x, i);
        return x->ubase[i];
    }
    if (nd->op == T_PARAM)
        return LLVMBuildInBoundsGEP2(x->b, x->T, x->a_params, (LLVMValueRef[]){ soff(x, OFF_PARAM, i, x->poff[nd->iattr[0]]) }, 1, "");
    return LLVMBuildInBoundsGEP2(x->b, x->T, x->a_ws, (LLVMValueRef[]){ slot_off(x, i) }, 1, "");
}

/* element [r][j] of unbatched node i, with broadcasting of rows == 1 and w == 1 */
static LLVMValueRef uptr(cgx *x, int i, LLVMValueRef r, LLVMValueRef j) {
    const tnode *n = ND(x, i);
    LLVMValueRef idx = n->w == 1 ? ci64(x, 0) : j;
    if (n->rows > 1) idx = LLVMBuildNSWAdd(x->b, LLVMBuildNSWMul(x->b, r, ci64(x, n->w), ""), idx, "");
    return gep(x, x->T, ubase(x, i), idx);
}
static LLVMValueRef uelem(cgx *x, int i, LLVMValueRef r, LLVMValueRef j) {
    if (ND(x, i)->op == T_CONST) return LLVMConstReal(x->T, ND(x, i)->fattr[0]);
    return load(x, x->T, uptr(x, i, r, j), x->esz);
}

/* operand i at feature j inside a tile: a vector of V lanes */
static LLVMValueRef tval(cgx *x, int i, LLVMValueRef j) {
    if (ND(x, i)->rows == 0) return bload(x, i, j);
    return splat(x, uelem(x, i, ci64(x, 0), j));
}

static LLVMValueRef ew(cgx *x, const tnode *nd, LLVMTypeRef ty, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c);
static LLVMValueRef fval(cgx *x, int i, LLVMValueRef j);

/* batched elementwise node i at feature j, computed from its operands' values (fval): the
 * operands in the workspace are loaded, the virtual ones computed in registers */
static LLVMValueRef fnode(cgx *x, int i, LLVMValueRef j) {
    const tnode *nd = ND(x, i);
    LLVMValueRef v[3] = { NULL, NULL, NULL };
    for (int k = 0; k < nd->nin && k < 3; k++) v[k] = fval(x, nd->in[k], j);
    return ew(x, nd, x->VT, v[0], v[1], v[2]);
}
/* operand i at feature j of a batched elementwise node: tval, unless i is virtual (fusion:
 * recomputed here, at its only use) or the product whose accumulator is being stored */
static LLVMValueRef fval(cgx *x, int i, LLVMValueRef j) {
    if (i == x->fmm) return x->facc;
    if (x->virt[i] == VIRT_EW) return fnode(x, i, j);
    return tval(x, i, j);
}

static LLVMValueRef auxptr(cgx *x, int i, LLVMValueRef k) {
    LLVMValueRef idx = LLVMBuildNSWAdd(x->b, aux_off(x, i), k, "");
    return LLVMBuildInBoundsGEP2(x->b, x->T, x->a_ws, &idx, 1, "");
}

/* ---------------------------------------------------------------- elementwise ops */

/* an upper bound of |node i| from its definition alone (constants, tanh, sigmoid and +, -,
 * * of bounded values), or infinity; a NaN input stays NaN through all of them */
static double magnitude_bound(cgx *x, int i, int depth) {
    const tnode *nd = ND(x, i);
    if (depth > 8) return __builtin_inf();
    switch ((t_op)nd->op) {
    case T_CONST: return __builtin_fabs(nd->fattr[0]);
    case T_TANH: case T_SIGMOID: return 1;
    case T_NEG: return magnitude_bound(x, nd->in[0], depth + 1);
    case T_MUL: return magnitude_bound(x, nd->in[0], depth + 1) * magnitude_bound(x, nd->in[1], depth + 1);
    case T_ADD: case T_SUB: return magnitude_bound(x, nd->in[0], depth + 1) + magnitude_bound(x, nd->in[1], depth + 1);
    default: return __builtin_inf();
    }
}

/* op of node nd on values of type ty (T in the prologue, VT in tiles) */
static LLVMValueRef ew(cgx *x, const tnode *nd, LLVMTypeRef ty, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
    LLVMValueRef zero = cst(x, ty, 0), one = cst(x, ty, 1);
    switch ((t_op)nd->op) {
    case T_NEG: return fneg(x, a);
    case T_EXP:   /* a bounded argument (an affine coupling's soft-clamped log-scale): inline */
        if (magnitude_bound(x, nd->in[0], 0) <= 80) return cgm_emit(x->C, x->b, x->M, CGM_EXP_INRANGE, a);
        return mathf(x, MF_EXP, a);
    case T_LOG: return mathf(x, MF_LOG, a);
    case T_LOG1P: return mathf(x, MF_LOG1P, a);
    case T_EXPM1: return mathf(x, MF_EXPM1, a);
    case T_TANH: return mathf(x, MF_TANH, a);
    case T_SIGMOID: { /* e = exp(-|x|); (x >= 0 ? 1 : e) / (1 + e) */
        LLVMValueRef e = mathf(x, MF_EXP, fneg(x, fabs_(x, a)));
        return fdiv(x, sel(x, fcmp(x, LLVMRealOGE, a, zero), one, e), fadd(x, one, e));
    }
    case T_SOFTPLUS: { /* max(x, 0) + log1p(exp(-|x|)) */
        LLVMValueRef l = mathf(x, MF_LOG1P, mathf(x, MF_EXP, fneg(x, fabs_(x, a))));
        return fadd(x, sel(x, fcmp(x, LLVMRealOGT, a, zero), a, zero), l);
    }
    case T_LOGSIGMOID: { /* -softplus(-x) = min(x, 0) - log1p(exp(-|x|)) */
        LLVMValueRef l = mathf(x, MF_LOG1P, mathf(x, MF_EXP, fneg(x, fabs_(x, a))));
        return fsub(x, sel(x, fcmp(x, LLVMRealOLT, a, zero), a, zero), l);
    }
    case T_RELU: return sel(x, fcmp(x, LLVMRealOLT, a, zero), zero, a);   /* NaN stays NaN; x86: one max */
    case T_ELU: return sel(x, fcmp(x, LLVMRealOGT, a, zero), a, mathf(x, MF_EXPM1, a));
    case T_GELU: { /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
        LLVMValueRef x3 = fmul(x, fmul(x, a, a), a);
        LLVMValueRef in = fmul(x, cst(x, ty, 0.7978845608028654), fadd(x, a, fmul(x, cst(x, ty, 0.044715), x3)));
        return fmul(x, fmul(x, cst(x, ty, 0.5), a), fadd(x, one, mathf(x, MF_TANH, in)));
    }
    case T_LEAKY: return sel(x, fcmp(x, LLVMRealOGT, a, zero), a, fmul(x, cst(x, ty, nd->fattr[0]), a));
    case T_SQUARE: return fmul(x, a, a);
    case T_ABS: return fabs_(x, a);
    case T_STEP: return sel(x, fcmp(x, LLVMRealOGT, a, zero), one, zero);
    case T_NONZERO: return sel(x, fcmp(x, LLVMRealUNE, a, zero), one, zero);   /* 1 for NaN */
    case T_ADD: return fadd(x, a, b);
    case T_SUB: return fsub(x, a, b);
    case T_MUL: return fmul(x, a, b);
    case T_DIV: return fdiv(x, a, b);
    /* a NaN operand gives NaN (a + b), as in PyTorch, whichever side it is on */
    case T_MAX: return sel(x, fcmp(x, LLVMRealUNO, a, b), fadd(x, a, b), sel(x, fcmp(x, LLVMRealOGT, a, b), a, b));
    case T_MIN: return sel(x, fcmp(x, LLVMRealUNO, a, b), fadd(x, a, b), sel(x, fcmp(x, LLVMRealOLT, a, b), a, b));
    case T_SELECT: return sel(x, fcmp(x, LLVMRealOGT, a, zero), b, c);
    default:
        cg_fail(x, "%s: codegen: op %s is not elementwise", x->p->name, t_ops[nd->op].name);
        return a;
    }
}

/* ---------------------------------------------------------------- unbatched values (prologue, epilogue) */

static void trip_end(cgx *x, int e, int unbatched);

/* dst (ws slot, unbatched) <- src with broadcasting; both [rows, w] */
static void ucopy(cgx *x, int dst, int src) {
    const tnode *d = ND(x, dst);
    cgloop Lr, Lj;
    FOR(x, Lr, d->rows, r)
        FOR(x, Lj, d->w, j)
            store(x, uelem(x, src, r, j), uptr(x, dst, r, j), x->esz);
}

/* a private constant i32 array in the current module */
static LLVMValueRef const_i32_table(cgx *x, const int32_t *v, int64_t n, const char *name) {
    LLVMValueRef *c = xmalloc(sizeof(LLVMValueRef) * (size_t)(n > 0 ? n : 1));
    for (int64_t k = 0; k < n; k++) c[k] = ci32(x, v[k]);
    LLVMValueRef g = const_array(x->M, x->i32, c, (uint64_t)n, name, 0);
    free(c);
    return g;
}

/* Code for unbatched node i (scalar loops over [rows, w]), run in the prologue or, for
 * values computed from sums over the batch, in the epilogue. Batched LU nodes get their
 * exp(+-diag) here (in the prologue); other batched nodes nothing. */
static void unbatched_node(cgx *x, int i) {
    const tnode *nd = ND(x, i);
    if (nd->op == T_LU_FWD || nd->op == T_LU_INV || nd->op == T_LU_U || nd->op == T_LU_UT || nd->op == T_LU_INVT) {
        /* batched, but its exp(+-diag) is unbatched */
        cgloop L;
        FOR(x, L, nd->w, k) {
            LLVMValueRef d = uelem(x, nd->in[1], k, k);
            if (nd->op == T_LU_INV || nd->op == T_LU_INVT) d = fneg(x, d);
            store(x, mathf(x, MF_EXP, d), auxptr(x, i, k), x->esz);
        }
        return;
    }
    if (nd->rows == 0) return;
    switch ((t_op)nd->op) {
    case T_PARAM: case T_CONST: case T_CONSTTENSOR:
        return;   /* read in place */
    case T_SCALAR: {
        LLVMValueRef s = load(x, x->f64, gep(x, x->f64, x->a_scalars, ci64(x, nd->iattr[0])), 8);
        if (!x->f64mode) s = LLVMBuildFPTrunc(x->b, s, x->T, "");
        store(x, s, uptr(x, i, ci64(x, 0), ci64(x, 0)), x->esz);
        return;
    }
    case T_ROWSUM: {
        const tnode *a = ND(x, nd->in[0]);
        cgloop Lr, Lj;
        FOR(x, Lr, nd->rows, r) {
            LLVMValueRef s = uelem(x, nd->in[0], r, ci64(x, 0));
            RFOR(x, Lj, ci64(x, 1), ci64(x, a->w), j, &s, 1) s = fadd(x, s, uelem(x, nd->in[0], r, j));
            store(x, s, uptr(x, i, r, ci64(x, 0)), x->esz);
        }
        return;
    }
    case T_DIAGEMBED: {   /* [1, D] -> [D, D]: v on the diagonal, 0 elsewhere */
        cgloop Lr, Lj;
        FOR(x, Lr, nd->rows, r)
            FOR(x, Lj, nd->w, j) {
                LLVMValueRef v = sel(x, LLVMBuildICmp(x->b, LLVMIntEQ, r, j, ""), uelem(x, nd->in[0], ci64(x, 0), j),
                                     LLVMConstReal(x->T, 0));
                store(x, v, uptr(x, i, r, j), x->esz);
            }
        return;
    }
    case T_DIAG: {
        cgloop L;
        FOR(x, L, nd->w, j) store(x, uelem(x, nd->in[0], j, j), uptr(x, i, ci64(x, 0), j), x->esz);
        return;
    }
    case T_GATHER: {   /* columns of an unbatched matrix (a MADE weight's units, derive.c) */
        LLVMValueRef g = const_i32_table(x, x->p->ints + nd->aux, nd->w, "ugather_idx");
        if (!g) return;
        cgloop Lr, Lj;
        FOR(x, Lr, nd->rows, r)
            FOR(x, Lj, nd->w, j) {
                LLVMValueRef s = LLVMBuildSExt(x->b, load(x, x->i32, gep(x, x->i32, g, j), 4), x->i64, "");
                store(x, uelem(x, nd->in[0], r, s), uptr(x, i, r, j), x->esz);
            }
        return;
    }
    case T_LOOP_BEGIN:
        ucopy(x, i, nd->in[0]);
        loop_open(x, &x->trip, ci64(x, 0), ci64(x, nd->iattr[0]), 0, NULL);
        return;
    case T_LOOP_END:
        trip_end(x, i, 1);
        return;
    default:
        break;
    }
    if (!(t_ops[nd->op].flags & TF_EW)) {
        cg_fail(x, "%s: %%%d: codegen: unbatched %s is not supported", x->p->name, i, t_ops[nd->op].name);
        return;
    }
    cgloop Lr, Lj;
    FOR(x, Lr, nd->rows, r)
        FOR(x, Lj, nd->w, j) {
            LLVMValueRef v[3] = { NULL, NULL, NULL };
            for (int k = 0; k < nd->nin && k < 3; k++) v[k] = uelem(x, nd->in[k], r, j);
            store(x, ew(x, nd, x->T, v[0], v[1], v[2]), uptr(x, i, r, j), x->esz);
        }
}

/* ---------------------------------------------------------------- tile code (batched) */

static LLVMValueRef splat_i32(cgx *x, LLVMValueRef s) {
    LLVMTypeRef vt = LLVMVectorType(x->i32, (unsigned)x->V);
    LLVMValueRef v = LLVMBuildInsertElement(x->b, LLVMGetPoison(vt), s, ci32(x, 0), "");
    return LLVMBuildShuffleVector(x->b, v, LLVMGetPoison(vt), LLVMConstNull(x->vi32), "");
}

static LLVMValueRef lane_stride(cgx *x, int w) {
    LLVMValueRef e[64];
    for (int l = 0; l < x->V; l++) e[l] = ci32(x, l * w);
    return LLVMConstVector(e, (unsigned)x->V);
}

/* pointers to element j of the tile's rows in a row-major [n, w] user buffer */
static LLVMValueRef row_ptrs(cgx *x, LLVMValueRef buf, int w, LLVMValueRef j) {
    LLVMValueRef tile = gep(x, x->T, buf, LLVMBuildNSWMul(x->b, x->tbase, ci64(x, w), ""));
    if (x->V == 1) return gep(x, x->T, tile, j);
    LLVMValueRef idx = LLVMBuildAdd(x->b, lane_stride(x, w), splat_i32(x, LLVMBuildTrunc(x->b, j, x->i32, "")), "");
    return gep(x, x->T, tile, idx);
}

/* The interleave of a and b (V lanes each): lanes [h*V/2, (h+1)*V/2) of each, alternating:
 * h = 0 gives a0 b0 a1 b1 ..., h = 1 the upper halves. */
static LLVMValueRef interleave(cgx *x, LLVMValueRef a, LLVMValueRef b, int h) {
    LLVMValueRef m[64];
    for (int k = 0; k < x->V / 2; k++) {
        m[2 * k] = ci32(x, h * x->V / 2 + k);
        m[2 * k + 1] = ci32(x, x->V + h * x->V / 2 + k);
    }
    return LLVMBuildShuffleVector(x->b, a, b, LLVMConstVector(m, (unsigned)x->V), "");
}
/* r[0..V-1] <- its transpose (V a power of 2): log2 V rounds of interleaving r[k] with
 * r[k + V/2] (the halves' low lanes into r[2k], high into r[2k+1]); V log2 V shuffles. */
static void transpose(cgx *x, LLVMValueRef *r) {
    LLVMValueRef t[64];
    for (int s = 1; s < x->V; s *= 2) {
        for (int k = 0; k < x->V / 2; k++) {
            t[2 * k] = interleave(x, r[k], r[k + x->V / 2], 0);
            t[2 * k + 1] = interleave(x, r[k], r[k + x->V / 2], 1);
        }
        memcpy(r, t, sizeof(LLVMValueRef) * (size_t)x->V);
    }
}

/* Moving a tile between a row-major [n, w] user buffer and feature vectors: with all V rows
 * present and w >= V (V a power of 2), blocks of V features are V contiguous row loads (or
 * stores) and a transpose in registers (the last block overlaps the one before when V does
 * not divide w: a few features are moved twice, with the same values); otherwise, or in a
 * partial tile, a masked gather (scatter) per feature. The gathers cost 4.9% of log_prob at
 * D = 64, the transposes 0.7%. rows_fast_path returns 1 when it opened the fast path's
 * block (then *slow is where the gathers go and *done where both paths end). */
static LLVMValueRef row_ptr(cgx *x, LLVMValueRef buf, int w, int l, LLVMValueRef j) {
    LLVMValueRef r = LLVMBuildNSWAdd(x->b, x->tbase, ci64(x, l), "");
    return gep(x, x->T, buf, LLVMBuildNSWAdd(x->b, LLVMBuildNSWMul(x->b, r, ci64(x, w), ""), j, ""));
}
/* the blocks of V features of a fast path: an LLVM loop over the w / V whole blocks (one copy
 * of the transpose's V log2 V shuffles, which are slow to compile: unrolled, they added 12 ms
 * to a 10-layer RealNVP's compile at D = 64), then the last V features if V does not divide
 * w; blk(x, ctx, first feature) moves one block */
static void row_blocks(cgx *x, int w, void (*blk)(cgx *, void *, LLVMValueRef), void *ctx) {
    int64_t save = x->unroll;
    x->unroll = 1;
    cgloop L;
    FOR(x, L, w / x->V, k) blk(x, ctx, LLVMBuildNSWMul(x->b, k, ci64(x, x->V), ""));
    x->unroll = save;
    if (w % x->V) blk(x, ctx, ci64(x, w - x->V));
}
typedef struct { int i; LLVMValueRef buf; } rowblk;
static void load_block(cgx *x, void *c, LLVMValueRef b) {
    const rowblk *rb = c;
    int w = ND(x, rb->i)->w;
    LLVMValueRef r[64];
    for (int l = 0; l < x->V; l++) r[l] = load(x, x->VT, row_ptr(x, rb->buf, w, l, b), x->esz);
    transpose(x, r);
    for (int k = 0; k < x->V; k++) bstore(x, rb->i, LLVMBuildNSWAdd(x->b, b, ci64(x, k), ""), r[k]);
}
static void store_block(cgx *x, void *c, LLVMValueRef b) {
    const rowblk *rb = c;
    int w = ND(x, rb->i)->w;
    LLVMValueRef r[64];
    for (int k = 0; k < x->V; k++) r[k] = bload(x, rb->i, LLVMBuildNSWAdd(x->b, b, ci64(x, k), ""));
    transpose(x, r);
    for (int l = 0; l < x->V; l++) store(x, r[l], row_ptr(x, rb->buf, w, l, b), x->esz);
}
static int rows_fast_path(cgx *x, int w, LLVMBasicBlockRef *slow, LLVMBasicBlockRef *done) {
    if (x->V < 2 || (x->V & (x->V - 1)) || w < x->V) return 0;
    LLVMBasicBlockRef fast = LLVMAppendBasicBlockInContext(x->C, x->fn, "rows_fast");
    *slow = LLVMAppendBasicBlockInContext(x->C, x->fn, "rows_slow");
    *done = LLVMAppendBasicBlockInContext(x->C, x->fn, "rows_done");
    LLVMValueRef rem = LLVMBuildNSWSub(x->b, x->a_n, x->tbase, "");
    LLVMBuildCondBr(x->b, LLVMBuildICmp(x->b, LLVMIntSGE, rem, ci64(x, x->V), ""), fast, *slow);
    LLVMPositionBuilderAtEnd(x->b, fast);
    return 1;
}

static void load_arg(cgx *x, int i) {
    const tnode *nd = ND(x, i);
    int w = nd->w;
    LLVMBasicBlockRef slow = NULL, done = NULL;
    if (rows_fast_path(x, w, &slow, &done)) {
        rowblk rb = { i, x->argp[nd->iattr[0]] };
        row_blocks(x, w, load_block, &rb);
        LLVMBuildBr(x->b, done);
        LLVMPositionBuilderAtEnd(x->b, slow);
    }
    cgloop L;
    FOR(x, L, nd->w, j) {
        LLVMValueRef p = row_ptrs(x, x->argp[nd->iattr[0]], nd->w, j), v;
        if (x->V == 1) {
            v = load(x, x->T, p, x->esz);
        } else {
            LLVMTypeRef tys[2] = { x->VT, LLVMTypeOf(p) }, fty;
            LLVMValueRef f = intrinsic(x, "llvm.masked.gather", tys, 2, &fty);
            LLVMValueRef a[4] = { p, ci32(x, x->esz), x->tmask, LLVMConstNull(x->VT) };
            v = LLVMBuildCall2(x->b, fty, f, a, 4, "");
        }
        bstore(x, i, j, v);
    }
    if (done) {
        LLVMBuildBr(x->b, done);
        LLVMPositionBuilderAtEnd(x->b, done);
    }
}

static void store_out(cgx *x, int k) {
    int i = x->p->outs[k];
    const tnode *nd = ND(x, i);
    int w = nd->w;
    LLVMBasicBlockRef slow = NULL, done = NULL;
    if (rows_fast_path(x, w, &slow, &done)) {
        rowblk rb = { i, x->outp[k] };
        row_blocks(x, w, store_block, &rb);
        LLVMBuildBr(x->b, done);
        LLVMPositionBuilderAtEnd(x->b, slow);
    }
    cgloop L;
    FOR(x, L, nd->w, j) {
        LLVMValueRef p = row_ptrs(x, x->outp[k], nd->w, j), v = bload(x, i, j);
        if (x->V == 1) {
            store(x, v, p, x->esz);
        } else {
            LLVMTypeRef tys[2] = { x->VT, LLVMTypeOf(p) }, fty;
            LLVMValueRef f = intrinsic(x, "llvm.masked.scatter", tys, 2, &fty);
            LLVMValueRef a[4] = { v, p, ci32(x, x->esz), x->tmask };
            LLVMBuildCall2(x->b, fty, f, a, 4, "");
        }
    }
    if (done) {
        LLVMBuildBr(x->b, done);
        LLVMPositionBuilderAtEnd(x->b, done);
    }
}

/* copy nfeat feature vectors of batched node src (from feature s0) to dst (from d0) */
static void vcopy(cgx *x, int dst, int64_t d0, int src, int64_t s0, int64_t nfeat) {
    LLVMValueRef d = bptr(x, dst, ci64(x, d0)), s = bptr(x, src, ci64(x, s0));
    LLVMBuildMemCpy(x->b, d, (unsigned)x->valign, s, (unsigned)x->valign, ci64(x, nfeat * x->V * x->esz));
}

/* dst (batched) <- src (batched or unbatched row), feature by feature */
static void bvcopy(cgx *x, int dst, int src) {
    const tnode *d = ND(x, dst), *s = ND(x, src);
    if (s->rows == 0 && s->w == d->w) { vcopy(x, dst, 0, src, 0, d->w); return; }
    cgloop L;
    FOR(x, L, d->w, j) bstore(x, dst, j, tval(x, src, j));
}

/* MATMUL: y[o] = sum_i x[i] * splat(W[i][o]); MATMUL_NT: y[o] = sum_i x[i] * splat(W[o][i]).
 * Blocks of bs outputs at a time (bs accumulators). With root >= 0 (fusion: the product is
 * virtual, a leaf of root's elementwise tree) each accumulator is not stored: root's tree
 * is evaluated at that output feature with the accumulator as the product's value, and
 * the result stored into root's slot (the epilogue: bias, activation, ... in registers). */
static LLVMValueRef mm_w(cgx *x, int i, LLVMValueRef ii, LLVMValueRef o) {
    const tnode *nd = ND(x, i);
    return splat(x, nd->op == T_MATMUL_NT ? uelem(x, nd->in[1], o, ii) : uelem(x, nd->in[1], ii, o));
}
/* One input row ii's terms of a block: acc[t * bs + k] (+)= x_t[ii] * W[ii][o0 + k] for the nt
 * tiles t and bs outputs k; first: the term starts the sum (0 + a*b would cost an add: -0 + 0
 * is +0). */
static void tile_ctx(cgx *x, int t);
static void mm_row(cgx *x, int i, LLVMValueRef o0, int bs, LLVMValueRef ii, LLVMValueRef *acc, int first) {
    int X = ND(x, i)->in[0], nt = x->pair_mm ? 2 : 1;   /* tiles: with pair_mm each weight is used twice */
    LLVMValueRef xt[2];
    for (int t = 0; t < nt; t++) {
        if (x->pair_mm) tile_ctx(x, t);
        xt[t] = bload(x, X, ii);
    }
    for (int k = 0; k < bs; k++) {
        LLVMValueRef w = mm_w(x, i, ii, LLVMBuildNSWAdd(x->b, o0, ci64(x, k), ""));
        for (int t = 0; t < nt; t++) {
            LLVMValueRef p = fmul(x, xt[t], w);
            acc[t * bs + k] = first ? p : fadd(x, acc[t * bs + k], p);
        }
    }
}

/* One block of bs outputs. The sum runs over R runs of consecutive input rows [se[2r],
 * se[2r+1]) (the first non-empty; a dense product is the single run [0, in), whose constant
 * bounds let a short sum be straight-line code). P > 1 (dense only): the rows are split into
 * P parts of in / P rows (the last takes the rest) summed side by side in one loop, then
 * added part by part: a narrow block (the last in % 8 outputs, e.g. a 64 -> 2 product) has
 * too few accumulators to keep two FMA pipes of latency 4 busy, and its sum in one chain is
 * latency-bound (docs/codegen.md, "Matrix products"). */
enum { MM_BS_MAX = 8 };
_Static_assert(2 * (int)MM_BS_MAX <= (int)LOOP_MAX_PHI, "a block's accumulators are loop phis");
static void mm_block(cgx *x, int i, LLVMValueRef o0, int bs, int root, const LLVMValueRef *se, int R, int P) {
    int nt = x->pair_mm ? 2 : 1, C = nt * bs;
    LLVMValueRef acc[2 * MM_BS_MAX];
    if (P > 1) {
        int64_t in = LLVMConstIntGetSExtValue(se[1]), L = in / P;
        for (int p = 0; p < P; p++) mm_row(x, i, o0, bs, ci64(x, p * L), acc + p * C, 1);
        cgloop Li;
        RFOR(x, Li, ci64(x, 1), ci64(x, L), j, acc, P * C) {
            for (int p = 0; p < P; p++) mm_row(x, i, o0, bs, LLVMBuildNSWAdd(x->b, j, ci64(x, p * L), ""), acc + p * C, 0);
        }
        for (int64_t r = P * L; r < in; r++) mm_row(x, i, o0, bs, ci64(x, r), acc + (P - 1) * C, 0);
        for (int c = 0; c < C; c++)
            for (int p = 1; p < P; p++) acc[c] = fadd(x, acc[c], acc[p * C + c]);
    } else {
        mm_row(x, i, o0, bs, se[0], acc, 1);
        for (int r = 0; r < R; r++) {
            cgloop Li;
            LLVMValueRef s = r == 0 ? LLVMBuildNSWAdd(x->b, se[0], ci64(x, 1), "") : se[2 * r];
            RFOR(x, Li, s, se[2 * r + 1], ii, acc, C) mm_row(x, i, o0, bs, ii, acc, 0);
        }
    }
    for (int t = 0; t < nt; t++) {
        if (x->pair_mm) tile_ctx(x, t);
        for (int k = 0; k < bs; k++) {
            LLVMValueRef o = LLVMBuildNSWAdd(x->b, o0, ci64(x, k), "");
            if (root < 0) {
                bstore(x, i, o, acc[t * bs + k]);
                continue;
            }
            x->fmm = i;
            x->facc = acc[t * bs + k];
            bstore(x, root, o, fnode(x, root, o));
            x->fmm = -1;
        }
    }
}

enum { MM_MAX_RUNS = 8 };

/* Masked products (MADE): when the weight is MUL(W, M) with M a constant tensor of the
 * weight's shape, an input row whose mask entries are all 0 over a block of B outputs adds
 * exactly 0 to each of them (x * (w * 0), for finite x and w), so the block's sum skips it.
 * The rows a block needs form runs of consecutive rows (MADE's cyclic degrees give 1-3 per
 * block), summed in increasing order: the dense order without the zero terms, so finite
 * inputs give the dense result, up to the sign of a zero. Returns a malloc'ed table of nb
 * blocks x *R [start, end) pairs (empty pairs pad a block's list), or NULL when the weight is
 * not masked, a block needs no row or more than MM_MAX_RUNS runs, or skipping would save
 * less than a sixth of the rows. */
static int32_t *mm_mask_runs(cgx *x, int i, int B, int64_t nb, int *R) {
    const tnode *nd = ND(x, i), *wn = ND(x, nd->in[1]);
    *R = 0;
    if (wn->op != T_MUL || wn->rows <= 1) return NULL;
    int c = -1;
    for (int k = 0; k < 2; k++) {
        const tnode *m = ND(x, wn->in[k]);
        if (m->op == T_CONSTTENSOR && m->rows == wn->rows && m->w == wn->w) c = wn->in[k];
    }
    if (c < 0) return NULL;
    const double *M = x->p->consts + ND(x, c)->aux;
    const int W = wn->w, nt = nd->op == T_MATMUL_NT;
    const int64_t in = ND(x, nd->in[0])->w;
    int32_t *rng = calloc((size_t)(nb * MM_MAX_RUNS * 2), sizeof(int32_t));
    if (!rng) return NULL;
    int64_t kept = 0;
    for (int64_t b = 0; b < nb; b++) {
        int r = -1, prev = 0;
        for (int64_t row = 0; row < in; row++) {
            int any = 0;
            for (int k = 0; k < B && !any; k++) {
                int64_t o = b * B + k;
                any = (nt ? M[o * W + row] : M[row * W + o]) != 0;
            }
            if (any) {
                if (!prev && ++r >= MM_MAX_RUNS) { free(rng); return NULL; }
                if (!prev) rng[(b * MM_MAX_RUNS + r) * 2] = (int32_t)row;
                rng[(b * MM_MAX_RUNS + r) * 2 + 1] = (int32_t)row + 1;
                kept++;
            }
            prev = any;
        }
        if (r < 0) { free(rng); return NULL; }
        if (r + 1 > *R) *R = r + 1;
    }
    if (6 * kept > 5 * nb * in) { free(rng); return NULL; }
    /* keep *R pairs per block */
    for (int64_t b = 0; b < nb; b++)
        memmove(rng + b * *R * 2, rng + b * MM_MAX_RUNS * 2, sizeof(int32_t) * (size_t)(*R * 2));
    return rng;
}

/* 32 vector registers (AVX-512, aarch64 NEON), else 16 */
static int many_vregs(const cgx *x) { return x->isa.avx512f || x->isa.arch == ARCH_AARCH64; }

static void emit_matmul(cgx *x, int i, int root) {
    int64_t out = ND(x, i)->w, in = ND(x, ND(x, i)->in[0])->w;
    /* Blocks of 8 outputs: 8 accumulators, as many as two FMA pipes of latency 4 need; 16
     * with tile pairs (pair_mm: 8 outputs of two tiles, docs/codegen.md, "Tile pairs") */
    int B = 8;
    int64_t nb = out / B;
    cgloop L;
    /* the loops over output blocks stay loops (unrolling them multiplies optimization time,
     * up to minutes for 32 x 32); a short inner sum (in <= x->unroll) is straight-line */
    int64_t save = x->unroll;
    int R = 0;
    int32_t *rng = nb > 0 ? mm_mask_runs(x, i, B, nb, &R) : NULL;
    LLVMValueRef trng = rng ? const_i32_table(x, rng, nb * R * 2, "mm_runs") : NULL;
    free(rng);
    LLVMValueRef dense[2] = { ci64(x, 0), ci64(x, in) };
    /* with 16 vector registers (AVX2) a pair's 16 accumulators would spill: the block is
     * computed as two halves of 4 outputs (each output's sum is the same, so the same bits) */
    int halves = x->pair_mm && !many_vregs(x) ? 2 : 1;
    x->unroll = 0;
    FOR(x, L, nb, ob) {
        x->unroll = save;
        LLVMValueRef o0 = LLVMBuildNSWMul(x->b, ob, ci64(x, B), "");
        LLVMValueRef se[2 * MM_MAX_RUNS];
        if (trng) {   /* this block's runs, from the table */
            LLVMValueRef at = LLVMBuildNSWMul(x->b, ob, ci64(x, 2 * R), "");
            for (int r = 0; r < 2 * R; r++)
                se[r] = LLVMBuildSExt(x->b, load(x, x->i32, gep(x, x->i32, trng, LLVMBuildNSWAdd(x->b, at, ci64(x, r), "")), 4), x->i64, "");
        }
        for (int h = 0; h < halves; h++)
            mm_block(x, i, LLVMBuildNSWAdd(x->b, o0, ci64(x, h * B / halves), ""), B / halves, root, trng ? se : dense,
                     trng ? R : 1, 1);
        x->unroll = 0;
    }
    /* the last out % 8 outputs as one block, its sums split into parts so that it has about
     * 8 accumulators per tile (parts of at least 4 rows). The parts depend on the product's
     * shape only, not on tile pairs or the vector width: the same bits from every variant. */
    x->unroll = save;
    if (out > nb * B) {
        int bs = (int)(out - nb * B), P = 8 / bs;
        if (P > in / 4) P = (int)(in / 4);
        mm_block(x, i, ci64(x, nb * B), bs, root, dense, 1, P > 1 ? P : 1);
    }
}

static void emit_gather(cgx *x, int i) {
    const tnode *nd = ND(x, i);
    const int32_t *idx = x->p->ints + nd->aux;
    int runs = 0;
    for (int j = 0; j < nd->w; j++)
        if (j == 0 || idx[j] != idx[j - 1] + 1) runs++;
    if (runs <= 8) {
        for (int j = 0; j < nd->w;) {
            int e = j + 1;
            while (e < nd->w && idx[e] == idx[e - 1] + 1) e++;
            vcopy(x, i, j, nd->in[0], idx[j], e - j);
            j = e;
        }
        return;
    }
    LLVMValueRef g = const_i32_table(x, idx, nd->w, "gather_idx");
    if (!g) return;
    cgloop L;
    FOR(x, L, nd->w, j) {
        LLVMValueRef s = LLVMBuildSExt(x->b, load(x, x->i32, gep(x, x->i32, g, j), 4), x->i64, "");
        bstore(x, i, j, bload(x, nd->in[0], s));
    }
}

/* One triangular pass over feature vectors, into node i:
 *   for k (upwards, or downwards if down):
 *     s = init[k] (times d[k] if dmode == 1)
 *     s = s +- sum over j in (k, D) if upper, else [0, k), of M'[k][j] * src[j]
 *     y[k] = s (times d[k] if dmode == 2)
 * with M' = M, or M transposed if trans; d = exp(+-diag M) from the prologue (aux). A pass
 * may run in place (init == src == i) when the order of k keeps src[j] unwritten. */
static void lu_pass(cgx *x, int i, int init, int src, int down, int upper, int trans, int sub, int dmode) {
    const tnode *nd = ND(x, i);
    int M = nd->in[1];
    int64_t D = nd->w;
    cgloop Lk, Lj;
    FOR(x, Lk, D, kk) {
        LLVMValueRef k = down ? LLVMBuildNSWSub(x->b, ci64(x, D - 1), kk, "") : kk;
        LLVMValueRef s = bload(x, init, k);
        if (dmode == 1) s = fmul(x, s, splat(x, load(x, x->T, auxptr(x, i, k), x->esz)));
        LLVMValueRef j0 = upper ? LLVMBuildNSWAdd(x->b, k, ci64(x, 1), "") : ci64(x, 0), j1 = upper ? ci64(x, D) : k;
        RFOR(x, Lj, j0, j1, j, &s, 1) {
            LLVMValueRef m = trans ? uelem(x, M, j, k) : uelem(x, M, k, j);
            LLVMValueRef t = fmul(x, splat(x, m), bload(x, src, j));
            s = sub ? fsub(x, s, t) : fadd(x, s, t);
        }
        if (dmode == 2) s = fmul(x, s, splat(x, load(x, x->T, auxptr(x, i, k), x->esz)));
        bstore(x, i, k, s);
    }
}

/* L = I + strictly-lower(M), U = strictly-upper(M) + diag(exp(diag M)) (tir.h) */
static void emit_lu(cgx *x, int i) {
    const tnode *nd = ND(x, i);
    int X = nd->in[0];
    switch ((t_op)nd->op) {
    case T_LU_FWD:   /* u = U x (into y), then y = L u: k downwards, in place */
        lu_pass(x, i, X, X, 0, 1, 0, 0, 1);
        lu_pass(x, i, i, i, 1, 0, 0, 0, 0);
        break;
    case T_LU_INV:   /* v = L^-1 x: forward substitution; y = U^-1 v: back substitution */
        lu_pass(x, i, X, i, 0, 0, 0, 1, 0);
        lu_pass(x, i, i, i, 1, 1, 0, 1, 2);
        break;
    case T_LU_U: lu_pass(x, i, X, X, 0, 1, 0, 0, 1); break;    /* y = U x */
    case T_LU_LT: lu_pass(x, i, X, X, 0, 1, 1, 0, 0); break;   /* y[k] = x[k] + sum_{j>k} M[j][k] x[j] */
    case T_LU_UT: lu_pass(x, i, X, X, 0, 0, 1, 0, 1); break;   /* y[k] = d[k] x[k] + sum_{j<k} M[j][k] x[j] */
    case T_LU_INVT:  /* w = U^-T x: forward substitution (U^T is lower); y = L^-T w: back substitution */
        lu_pass(x, i, X, i, 0, 0, 1, 1, 2);   /* w[k] = (x[k] - sum_{j<k} M[j][k] w[j]) * exp(-M[k][k]) */
        lu_pass(x, i, i, i, 1, 1, 1, 1, 0);   /* y[k] = w[k] - sum_{j>k} M[j][k] y[j] */
        break;
    default: break;
    }
}

/* SCATTER: y = 0; y[idx[j]] += x[j] for j in order. A position's first write stores 0 + x[j]
 * (the same value as adding to the zero), the positions no j writes get a zero vector: no
 * memset of the whole slot and no load of a zero back (a libc memset of 4 KB a tile for
 * each of a coupling's scatters in the gradient at D = 64). */
static void emit_scatter(cgx *x, int i) {
    const tnode *nd = ND(x, i);
    const int32_t *idx = x->p->ints + nd->aux;
    char *seen = calloc((size_t)nd->w, 1);
    if (!seen) { cg_fail(x, "out of memory"); return; }
    LLVMValueRef zero = LLVMConstNull(x->VT);
    for (int j = 0; j < nd->naux; j++) {
        LLVMValueRef d = ci64(x, idx[j]), v = bload(x, nd->in[0], ci64(x, j));
        bstore(x, i, d, fadd(x, seen[idx[j]] ? bload(x, i, d) : zero, v));
        seen[idx[j]] = 1;
    }
    for (int d = 0; d < nd->w; d++)
        if (!seen[d]) bstore(x, i, ci64(x, d), zero);
    free(seen);
}

/* an i64 constant of z's type (scalar or vector) */
static LLVMValueRef kint(LLVMValueRef z, uint64_t v) {
    LLVMTypeRef ty = LLVMTypeOf(z);
    if (LLVMGetTypeKind(ty) != LLVMVectorTypeKind) return LLVMConstInt(ty, v, 0);
    LLVMValueRef e[64], c = LLVMConstInt(LLVMGetElementType(ty), v, 0);
    unsigned n = LLVMGetVectorSize(ty);
    for (unsigned i = 0; i < n; i++) e[i] = c;
    return LLVMConstVector(e, n);
}
static LLVMValueRef mix64(cgx *x, LLVMValueRef z) {
    z = LLVMBuildXor(x->b, z, LLVMBuildLShr(x->b, z, kint(z, 30), ""), "");
    z = LLVMBuildMul(x->b, z, kint(z, 0xbf58476d1ce4e5b9ull), "");
    z = LLVMBuildXor(x->b, z, LLVMBuildLShr(x->b, z, kint(z, 27), ""), "");
    z = LLVMBuildMul(x->b, z, kint(z, 0x94d049bb133111ebull), "");
    return LLVMBuildXor(x->b, z, LLVMBuildLShr(x->b, z, kint(z, 31), ""), "");
}

/* RANDN on a whole tile at once: the uniforms of the V lanes as <V x i64> / <V x double>,
 * then compiler/randn.h's log, sine and cosine on vectors, operation for operation (no
 * fast-math flags: nothing may be contracted or reassociated), so the bits are the
 * interpreter's. */
static LLVMValueRef dconst(cgx *x, LLVMTypeRef ty, double v) {
    LLVMValueRef c = LLVMConstReal(x->f64, v);
    if (LLVMGetTypeKind(ty) != LLVMVectorTypeKind) return c;
    LLVMValueRef e[64];
    for (int i = 0; i < x->V; i++) e[i] = c;
    return LLVMConstVector(e, (unsigned)x->V);
}
#define DMUL(p_, q_) LLVMBuildFMul(x->b, (p_), (q_), "")
#define DADD(p_, q_) LLVMBuildFAdd(x->b, (p_), (q_), "")
#define DSUB(p_, q_) LLVMBuildFSub(x->b, (p_), (q_), "")
static LLVMValueRef vlog01(cgx *x, LLVMTypeRef dt, LLVMTypeRef it, LLVMValueRef u) {
    LLVMValueRef b = LLVMBuildBitCast(x->b, u, it, "");
    LLVMValueRef e = LLVMBuildSub(x->b, LLVMBuildAnd(x->b, LLVMBuildLShr(x->b, b, kint(b, 52), ""), kint(b, 0x7ff), ""),
                                  kint(b, 1023), "");
    LLVMValueRef mb = LLVMBuildOr(x->b, LLVMBuildAnd(x->b, b, kint(b, 0x000fffffffffffffull), ""), kint(b, 0x3ff0000000000000ull), "");
    LLVMValueRef m = LLVMBuildBitCast(x->b, mb, dt, "");
    LLVMValueRef big = LLVMBuildFCmp(x->b, LLVMRealOGT, m, dconst(x, dt, TIR_SQRT2), "");
    m = LLVMBuildSelect(x->b, big, DMUL(m, dconst(x, dt, 0.5)), m, "");
    e = LLVMBuildSelect(x->b, big, LLVMBuildAdd(x->b, e, kint(e, 1), ""), e, "");
    LLVMValueRef s = LLVMBuildFDiv(x->b, DSUB(m, dconst(x, dt, 1.0)), DADD(m, dconst(x, dt, 1.0)), "");
    LLVMValueRef z = DMUL(s, s);
    LLVMValueRef p = dconst(x, dt, tir_rlog[TIR_RLOG_N - 1]);
    for (int k = TIR_RLOG_N - 2; k >= 0; k--) p = DADD(DMUL(p, z), dconst(x, dt, tir_rlog[k]));
    LLVMValueRef lm = DADD(DADD(s, s), DMUL(DMUL(s, z), p));
    LLVMValueRef ed = LLVMBuildSIToFP(x->b, e, dt, "");
    LLVMValueRef lo = DADD(DMUL(ed, dconst(x, dt, TIR_LN2_LO)), lm);
    return DADD(DMUL(ed, dconst(x, dt, TIR_LN2_HI)), lo);
}
/* sin and cos of 2 pi u from one reduction (randn.h, tir_sincos2pi) */
static void vsincos2pi(cgx *x, LLVMTypeRef dt, LLVMValueRef u, LLVMValueRef *sin_out, LLVMValueRef *cos_out) {
    LLVMTypeRef fty;
    LLVMValueRef t = DSUB(u, dconst(x, dt, 0.5));
    LLVMValueRef rf = intrinsic(x, "llvm.round", &dt, 1, &fty);
    LLVMValueRef t4 = DMUL(t, dconst(x, dt, 4.0));
    LLVMValueRef q = LLVMBuildCall2(x->b, fty, rf, &t4, 1, "");
    LLVMValueRef r = DSUB(t, DMUL(q, dconst(x, dt, 0.25)));
    LLVMValueRef xr = DMUL(r, dconst(x, dt, TIR_2PI));
    LLVMValueRef x2 = DMUL(xr, xr);
    LLVMValueRef ps = dconst(x, dt, tir_rsin[TIR_RTRIG_N - 1]), pc = dconst(x, dt, tir_rcos[TIR_RTRIG_N - 1]);
    for (int k = TIR_RTRIG_N - 2; k >= 0; k--) {
        ps = DADD(DMUL(ps, x2), dconst(x, dt, tir_rsin[k]));
        pc = DADD(DMUL(pc, x2), dconst(x, dt, tir_rcos[k]));
    }
    LLVMValueRef sn = DADD(xr, DMUL(DMUL(xr, x2), ps));
    LLVMValueRef cs = DADD(dconst(x, dt, 1.0), DMUL(x2, pc));
    LLVMValueRef nsn = LLVMBuildFNeg(x->b, sn, ""), ncs = LLVMBuildFNeg(x->b, cs, "");
    LLVMValueRef qm1 = LLVMBuildFCmp(x->b, LLVMRealOEQ, q, dconst(x, dt, -1.0), "");
    LLVMValueRef qp1 = LLVMBuildFCmp(x->b, LLVMRealOEQ, q, dconst(x, dt, 1.0), "");
    LLVMValueRef q0 = LLVMBuildFCmp(x->b, LLVMRealOEQ, q, dconst(x, dt, 0.0), "");
    /* q = 0, 1, -1, +-2: cos -cs, sn, -sn, cs; sin -sn, -cs, cs, sn */
    LLVMValueRef c = LLVMBuildSelect(x->b, qm1, nsn, cs, "");
    c = LLVMBuildSelect(x->b, qp1, sn, c, "");
    *cos_out = LLVMBuildSelect(x->b, q0, ncs, c, "");
    LLVMValueRef v = LLVMBuildSelect(x->b, qm1, cs, sn, "");
    v = LLVMBuildSelect(x->b, qp1, ncs, v, "");
    *sin_out = LLVMBuildSelect(x->b, q0, nsn, v, "");
}
/* one Box-Muller pair of RANDN (tir.h): columns 2p (cosine) and 2p + 1 (sine, if odd_too) */
static void randn_pair(cgx *x, int i, LLVMTypeRef it, LLVMTypeRef dt, LLVMValueRef rw, LLVMValueRef seed, uint64_t salt,
                       LLVMValueRef p, int odd_too) {
    LLVMValueRef pv = p;
    if (x->V > 1) {
        LLVMValueRef v = LLVMBuildInsertElement(x->b, LLVMGetPoison(it), p, ci32(x, 0), "");
        pv = LLVMBuildShuffleVector(x->b, v, LLVMGetPoison(it), LLVMConstNull(x->vi32), "");
    }
    LLVMValueRef k2 = LLVMBuildShl(x->b, LLVMBuildAdd(x->b, rw, pv, ""), kint(rw, 1), "");
    LLVMValueRef u[2];
    for (int t = 0; t < 2; t++) {
        LLVMValueRef kk = LLVMBuildAdd(x->b, k2, kint(k2, salt + (uint64_t)t), "");
        LLVMValueRef h = mix64(x, LLVMBuildXor(x->b, seed, mix64(x, kk), ""));
        LLVMValueRef f = LLVMBuildUIToFP(x->b, LLVMBuildLShr(x->b, h, kint(h, 11), ""), dt, "");
        u[t] = DMUL(DADD(f, dconst(x, dt, 0.5)), dconst(x, dt, 0x1p-53));
    }
    LLVMTypeRef fty;
    LLVMValueRef sq = intrinsic(x, "llvm.sqrt", &dt, 1, &fty);
    LLVMValueRef a = DMUL(dconst(x, dt, -2.0), vlog01(x, dt, it, u[0]));
    LLVMValueRef rad = LLVMBuildCall2(x->b, fty, sq, &a, 1, "");
    LLVMValueRef sn, cs;
    vsincos2pi(x, dt, u[1], &sn, &cs);
    LLVMValueRef c0 = LLVMBuildShl(x->b, p, ci64(x, 1), "");
    for (int t = 0; t < 1 + odd_too; t++) {
        LLVMValueRef v = DMUL(rad, t ? sn : cs);
        if (!x->f64mode) v = LLVMBuildFPTrunc(x->b, v, x->VT, "");
        bstore(x, i, t ? LLVMBuildAdd(x->b, c0, ci64(x, 1), "") : c0, v);
    }
}
static void emit_randn_tile(cgx *x, int i) {
    const tnode *nd = ND(x, i);
    int64_t w = nd->w;
    uint64_t salt = (uint64_t)(int64_t)nd->iattr[0];
    LLVMTypeRef it = x->V > 1 ? LLVMVectorType(x->i64, (unsigned)x->V) : x->i64;
    LLVMTypeRef dt = x->V > 1 ? LLVMVectorType(x->f64, (unsigned)x->V) : x->f64;
    LLVMValueRef r = LLVMBuildAdd(x->b, x->a_row0, x->tbase, "");
    if (x->V > 1) {   /* splat, plus the lane index */
        LLVMValueRef v = LLVMBuildInsertElement(x->b, LLVMGetPoison(it), r, ci32(x, 0), "");
        v = LLVMBuildShuffleVector(x->b, v, LLVMGetPoison(it), LLVMConstNull(x->vi32), "");
        LLVMValueRef e[64];
        for (int l = 0; l < x->V; l++) e[l] = LLVMConstInt(x->i64, (unsigned long long)l, 0);
        r = LLVMBuildAdd(x->b, v, LLVMConstVector(e, (unsigned)x->V), "");
    }
    LLVMValueRef seed = x->a_seed;
    if (x->V > 1) {
        LLVMValueRef v = LLVMBuildInsertElement(x->b, LLVMGetPoison(it), seed, ci32(x, 0), "");
        seed = LLVMBuildShuffleVector(x->b, v, LLVMGetPoison(it), LLVMConstNull(x->vi32), "");
    }
    /* columns 2p and 2p + 1 share the pair p: its counter is r * ceil(w / 2) + p */
    LLVMValueRef rw = LLVMBuildMul(x->b, r, kint(r, (uint64_t)((w + 1) / 2)), "");
    cgloop Lc;
    FOR(x, Lc, w / 2, p) randn_pair(x, i, it, dt, rw, seed, salt, p, 1);
    if (w & 1) randn_pair(x, i, it, dt, rw, seed, salt, ci64(x, w / 2), 0);
}
#undef DMUL
#undef DADD
#undef DSUB

static LLVMValueRef libm1(cgx *x, const char *name, LLVMValueRef v) { return call1(x, name, v); }

/* RANDN / RANDLOGISTIC exactly as tir.h defines them, per lane, in f64 with libm (no
 * fast-math flags at all), so that every backend and every tiling gives the same bits. */
static void emit_rand(cgx *x, int i) {
    const tnode *nd = ND(x, i);
    if (nd->op == T_RANDN) { emit_randn_tile(x, i); return; }
    int64_t w = nd->w;
    uint64_t salt = (uint64_t)(int64_t)nd->iattr[0];
    cgloop Lc, Ll;
    FOR(x, Lc, w, c) {
        LLVMValueRef l = ci64(x, 0);
        if (x->V > 1) {   /* lanes: always a loop (each lane calls libm) */
            loop_open(x, &Ll, ci64(x, 0), ci64(x, x->V), 0, NULL);
            l = Ll.iv;
        }
        LLVMValueRef r = LLVMBuildAdd(x->b, LLVMBuildAdd(x->b, x->a_row0, x->tbase, ""), l, "");
        LLVMValueRef k2 = LLVMBuildShl(x->b, LLVMBuildAdd(x->b, LLVMBuildMul(x->b, r, ci64(x, w), ""), c, ""), ci64(x, 1), "");
        LLVMValueRef u[2];
        for (int t = 0; t < 2; t++) {
            LLVMValueRef kk = LLVMBuildAdd(x->b, k2, LLVMConstInt(x->i64, (unsigned long long)(salt + (uint64_t)t), 0), "");
            LLVMValueRef h = mix64(x, LLVMBuildXor(x->b, x->a_seed, mix64(x, kk), ""));
            LLVMValueRef f = LLVMBuildUIToFP(x->b, LLVMBuildLShr(x->b, h, ci64(x, 11), ""), x->f64, "");
            u[t] = LLVMBuildFMul(x->b, LLVMBuildFAdd(x->b, f, LLVMConstReal(x->f64, 0.5), ""), LLVMConstReal(x->f64, 0x1p-53), "");
        }
        LLVMValueRef v;
        if (nd->op == T_RANDN) {
            LLVMTypeRef fty;
            LLVMValueRef sq = intrinsic(x, "llvm.sqrt", &x->f64, 1, &fty);
            LLVMValueRef a = LLVMBuildFMul(x->b, LLVMConstReal(x->f64, -2.0), libm1(x, "log", u[0]), "");
            a = LLVMBuildCall2(x->b, fty, sq, &a, 1, "");
            LLVMValueRef cs = libm1(x, "cos", LLVMBuildFMul(x->b, LLVMConstReal(x->f64, 6.283185307179586), u[1], ""));
            v = LLVMBuildFMul(x->b, a, cs, "");
        } else {
            v = LLVMBuildFSub(x->b, libm1(x, "log", u[0]), libm1(x, "log1p", LLVMBuildFNeg(x->b, u[0], "")), "");
        }
        if (!x->f64mode) v = LLVMBuildFPTrunc(x->b, v, x->T, "");
        LLVMValueRef idx = LLVMBuildAdd(x->b, slot_off(x, i), LLVMBuildAdd(x->b, LLVMBuildMul(x->b, c, ci64(x, x->V), ""), l, ""), "");
        store(x, v, LLVMBuildInBoundsGEP2(x->b, x->T, x->a_tws, &idx, 1, ""), x->esz);
        if (x->V > 1) loop_close(x, &Ll, NULL, 1);
    }
}

/* ---------------------------------------------------------------- batch reductions (TF_RED) */

/* A reduction keeps one accumulator per element and lane (aux slot, rows*w vectors of V),
 * zeroed in the prologue, added to by every tile (invalid lanes masked to 0, so that a NaN
 * or inf computed from the zero padding never leaks in), and summed over the lanes, in lane
 * order, after the last tile. */
static LLVMValueRef accptr(cgx *x, int i, LLVMValueRef e) {
    LLVMValueRef idx = LLVMBuildNSWAdd(x->b, aux_off(x, i), LLVMBuildNSWMul(x->b, e, ci64(x, x->V), ""), "");
    return LLVMBuildInBoundsGEP2(x->b, x->T, x->a_ws, &idx, 1, "");
}
static LLVMValueRef masked(cgx *x, LLVMValueRef v) { return x->V > 1 ? sel(x, x->tmask, v, cst(x, x->VT, 0)) : v; }

/* MATMUL_TN with V > 1 keeps instead one accumulator per element (not per lane), rows of
 * qpad = w rounded up to V elements, updated by a register-blocked kernel (tn_accumulate). */
static int tn_blocked(cgx *x, int i) { return x->V > 1 && ND(x, i)->op == T_MATMUL_TN; }
static int64_t tn_qpad(cgx *x, int i) { return (ND(x, i)->w + x->V - 1) / x->V * x->V; }
static int64_t red_acc_bytes(cgx *x, int i) {
    const tnode *nd = ND(x, i);
    return tn_blocked(x, i) ? (int64_t)nd->rows * tn_qpad(x, i) * x->esz : (int64_t)nd->rows * nd->w * x->V * x->esz;
}
/* tn_blocked: its scratch (Am, then Bt; tn_accumulate), at x->tn_scratch */
enum { TN_MAX_NB = 4, TN_MAX_ACC = 24 };
_Static_assert((int)TN_MAX_ACC <= (int)LOOP_MAX_PHI, "tn_kernel's accumulators are loop phis");
static int64_t tn_am_bytes(cgx *x, int i) { return ((int64_t)ND(x, i)->rows * x->V * x->esz + 63) / 64 * 64; }
static int64_t tn_scratch_bytes(cgx *x, int i) {
    return tn_am_bytes(x, i) + ((int64_t)x->V * tn_qpad(x, i) * x->esz + 63) / 64 * 64;
}

static void red_zero(cgx *x, int i) {
    LLVMBuildMemSet(x->b, auxptr(x, i, ci64(x, 0)), LLVMConstInt(LLVMInt8TypeInContext(x->C), 0, 0),
                    ci64(x, red_acc_bytes(x, i)), (unsigned)x->valign);
}

/* Transposes V vectors of V lanes in place (log2 V stages of two-source shuffles): afterwards
 * v[r] holds lane r of every input vector, in order. */
static void transpose_vv(cgx *x, LLVMValueRef *v) {
    int V = x->V;
    for (int h = V / 2; h >= 1; h /= 2) {
        LLVMValueRef ma[64], mb[64];
        for (int e = 0; e < V; e++) {
            int k = e - e % (2 * h), off = e % (2 * h);
            ma[e] = ci32(x, off < h ? k + off : V + k + off - h);
            mb[e] = ci32(x, off < h ? k + off + h : V + k + off);
        }
        LLVMValueRef cma = LLVMConstVector(ma, (unsigned)V), cmb = LLVMConstVector(mb, (unsigned)V);
        for (int a = 0; a < V; a++) {
            if (a & h) continue;
            LLVMValueRef p = v[a], q = v[a + h];
            v[a] = LLVMBuildShuffleVector(x->b, p, q, cma, "");
            v[a + h] = LLVMBuildShuffleVector(x->b, p, q, cmb, "");
        }
    }
}

/* MATMUL_TN, acc[a][b] += sum over the tile's rows r of A[a][r] * B[b][r], for V > 1.
 * Two copies into the program's TN scratch (shared by its MATMUL_TN nodes, which never run
 * at once): Am, A's tile with invalid rows (past n) set to 0, so that a NaN computed from the
 * zero padding cannot leak in; and Bt[r][b], B's tile transposed (blocks of V columns
 * transposed in registers, columns past w set to 0). Then a register-blocked kernel
 * (tn_kernel) over groups of m rows a and nb blocks of V columns b: m * nb accumulators,
 * per tile row r nb vector loads of Bt and m broadcasts of Am. Every element's sum runs over
 * r in order (the first term a product, the others fused multiply-adds) and is then added
 * to its accumulator: an order fixed by the shapes, the same for every grouping, tile pair
 * and segment. */
/* row r's terms: c[a * nb + j] (+)= Am[a0 + a][r] * Bt[r][block j0 + j] */
static void tn_terms(cgx *x, int i, LLVMValueRef am, LLVMValueRef bt, LLVMValueRef a0, LLVMValueRef j0, int m, int nb,
                     LLVMValueRef r, LLVMValueRef *c, int first) {
    int V = x->V;
    LLVMValueRef bv[TN_MAX_NB];
    LLVMValueRef brow = LLVMBuildNSWAdd(x->b, bt, LLVMBuildNSWMul(x->b, r, ci64(x, tn_qpad(x, i)), ""), "");
    for (int j = 0; j < nb; j++) {
        LLVMValueRef idx = LLVMBuildNSWAdd(x->b, brow, LLVMBuildNSWMul(x->b, LLVMBuildNSWAdd(x->b, j0, ci64(x, j), ""), ci64(x, V), ""), "");
        bv[j] = load(x, x->VT, LLVMBuildInBoundsGEP2(x->b, x->T, x->a_ws, &idx, 1, ""), x->valign);
    }
    for (int a = 0; a < m; a++) {
        LLVMValueRef row = LLVMBuildNSWMul(x->b, LLVMBuildNSWAdd(x->b, a0, ci64(x, a), ""), ci64(x, V), "");
        LLVMValueRef idx = LLVMBuildNSWAdd(x->b, am, LLVMBuildNSWAdd(x->b, row, r, ""), "");
        LLVMValueRef s = splat(x, load(x, x->T, LLVMBuildInBoundsGEP2(x->b, x->T, x->a_ws, &idx, 1, ""), x->esz));
        for (int j = 0; j < nb; j++) {
            LLVMValueRef t = fmul(x, s, bv[j]);
            c[a * nb + j] = first ? t : fadd(x, c[a * nb + j], t);
        }
    }
}

static void tn_kernel(cgx *x, int i, LLVMValueRef am, LLVMValueRef bt, LLVMValueRef a0, LLVMValueRef j0, int m, int nb) {
    int64_t qpad = tn_qpad(x, i);
    LLVMValueRef c[TN_MAX_ACC];
    cgloop L;
    tn_terms(x, i, am, bt, a0, j0, m, nb, ci64(x, 0), c, 1);
    RFOR(x, L, ci64(x, 1), ci64(x, x->V), r, c, m * nb) tn_terms(x, i, am, bt, a0, j0, m, nb, r, c, 0);
    for (int a = 0; a < m; a++)
        for (int j = 0; j < nb; j++) {
            LLVMValueRef e = LLVMBuildNSWAdd(x->b, LLVMBuildNSWMul(x->b, LLVMBuildNSWAdd(x->b, a0, ci64(x, a), ""), ci64(x, qpad), ""),
                                             LLVMBuildNSWMul(x->b, LLVMBuildNSWAdd(x->b, j0, ci64(x, j), ""), ci64(x, x->V), ""), "");
            LLVMValueRef p = auxptr(x, i, e);
            store(x, fadd(x, load(x, x->VT, p, x->valign), c[a * nb + j]), p, x->valign);
        }
}

/* the kernels for rows a0 .. a0 + m - 1 over all column blocks: groups of nb blocks, then
 * the rest */
static void tn_rows(cgx *x, int i, LLVMValueRef am, LLVMValueRef bt, LLVMValueRef a0, int m, int nb) {
    int64_t nblk = tn_qpad(x, i) / x->V;
    cgloop L;
    FOR(x, L, nblk / nb, g) tn_kernel(x, i, am, bt, a0, LLVMBuildNSWMul(x->b, g, ci64(x, nb), ""), m, nb);
    if (nblk % nb) tn_kernel(x, i, am, bt, a0, ci64(x, nblk / nb * nb), m, (int)(nblk % nb));
}

/* the kernel's blocking: m * nb accumulators, nb vectors of Bt and a broadcast in the
 * target's vector registers (32 with AVX-512 and NEON, else 16); m divides the rows when one
 * of the allowed sizes does (one kernel less) */
static void tn_blocking(cgx *x, int i, int *m, int *nb) {
    int64_t rows = ND(x, i)->rows, nblk = tn_qpad(x, i) / x->V;
    int big = many_vregs(x);
    int mmax = big ? 6 : 4, mmin = big ? 4 : 3;
    *nb = big ? 4 : 2;
    if (*nb > nblk) *nb = (int)nblk;
    *m = mmax;
    for (int k = mmax; k >= mmin; k--)
        if (rows % k == 0) { *m = k; break; }
    if (*m > rows) *m = (int)rows;
}

static void tn_accumulate(cgx *x, int i) {
    const tnode *nd = ND(x, i);
    int A = nd->in[0], B = nd->in[1], V = x->V, m, nb;
    int64_t q = nd->w, qpad = tn_qpad(x, i), nblk = qpad / V, rows = nd->rows;
    LLVMValueRef am = soff(x, OFF_AM, i, x->tn_scratch / x->esz);
    LLVMValueRef bt = LLVMBuildNSWAdd(x->b, am, ci64(x, tn_am_bytes(x, i) / x->esz), "");
    cgloop Lc, Lb, La;
    int64_t save = x->unroll;
    x->unroll = 0;   /* the loops stay loops: the bodies are already unrolled */
    FOR(x, Lc, rows, c) {
        LLVMValueRef idx = LLVMBuildNSWAdd(x->b, am, LLVMBuildNSWMul(x->b, c, ci64(x, V), ""), "");
        store(x, masked(x, bload(x, A, c)), LLVMBuildInBoundsGEP2(x->b, x->T, x->a_ws, &idx, 1, ""), x->valign);
    }
    FOR(x, Lb, nblk, bb) {
        LLVMValueRef v[64];
        LLVMValueRef b0 = LLVMBuildNSWMul(x->b, bb, ci64(x, V), "");
        for (int j = 0; j < V; j++) {
            /* B[b0 + j], or 0 past the last column (clamped load, then select) */
            LLVMValueRef bj = LLVMBuildNSWAdd(x->b, b0, ci64(x, j), "");
            LLVMValueRef in = LLVMBuildICmp(x->b, LLVMIntSLT, bj, ci64(x, q), "");
            LLVMValueRef bv = bload(x, B, sel(x, in, bj, ci64(x, q - 1)));
            v[j] = sel(x, in, masked(x, bv), cst(x, x->VT, 0));
        }
        transpose_vv(x, v);
        for (int r = 0; r < V; r++) {
            LLVMValueRef idx = LLVMBuildNSWAdd(x->b, bt, LLVMBuildNSWAdd(x->b, b0, ci64(x, (int64_t)r * qpad), ""), "");
            store(x, v[r], LLVMBuildInBoundsGEP2(x->b, x->T, x->a_ws, &idx, 1, ""), x->valign);
        }
    }
    tn_blocking(x, i, &m, &nb);
    FOR(x, La, rows / m, g) tn_rows(x, i, am, bt, LLVMBuildNSWMul(x->b, g, ci64(x, m), ""), m, nb);
    if (rows % m) tn_rows(x, i, am, bt, ci64(x, rows / m * m), (int)(rows % m), nb);
    x->unroll = save;
}

static void red_add(cgx *x, int i, LLVMValueRef e, LLVMValueRef v) {
    LLVMValueRef p = accptr(x, i, e);
    store(x, fadd(x, load(x, x->VT, p, x->valign), v), p, x->valign);
}

static void red_accumulate(cgx *x, int i) {
    const tnode *nd = ND(x, i);
    cgloop La, Lb;
    if (nd->op == T_BATCHSUM) {
        FOR(x, La, nd->w, j) red_add(x, i, j, masked(x, bload(x, nd->in[0], j)));
        return;
    }
    if (tn_blocked(x, i)) { tn_accumulate(x, i); return; }
    /* MATMUL_TN, V = 1: acc[a][b] += a_r * b_r */
    int A = nd->in[0], B = nd->in[1];
    FOR(x, La, nd->rows, ia) {
        LLVMValueRef av = masked(x, bload(x, A, ia));
        FOR(x, Lb, nd->w, jb) {
            LLVMValueRef e = LLVMBuildNSWAdd(x->b, LLVMBuildNSWMul(x->b, ia, ci64(x, nd->w), ""), jb, "");
            red_add(x, i, e, fmul(x, av, masked(x, bload(x, B, jb))));
        }
    }
}

/* where a sum over the batch ends up: its slot, or its place in the gradient output */
static LLVMValueRef red_dst(cgx *x, int i) {
    if (x->dgrad[i] < 0) return ubase(x, i);
    LLVMValueRef g = load(x, x->ptr, gep(x, x->ptr, x->a_outs, ci64(x, x->p->nouts)), 8);
    return gep(x, x->T, g, soff(x, OFF_GRAD, i, x->dgrad[i]));
}

static void red_finish(cgx *x, int i) {
    const tnode *nd = ND(x, i);
    cgloop L;
    LLVMValueRef dst = red_dst(x, i);
    if (tn_blocked(x, i)) {   /* copy the [rows, qpad] accumulators to [rows, w] */
        cgloop La;
        int64_t qpad = tn_qpad(x, i);
        FOR(x, La, nd->rows, a) {
            LLVMValueRef d = gep(x, x->T, dst, LLVMBuildNSWMul(x->b, a, ci64(x, nd->w), ""));
            LLVMValueRef sp = auxptr(x, i, LLVMBuildNSWMul(x->b, a, ci64(x, qpad), ""));
            LLVMBuildMemCpy(x->b, d, (unsigned)x->esz, sp, (unsigned)x->esz, ci64(x, (int64_t)nd->w * x->esz));
        }
        return;
    }
    FOR(x, L, (int64_t)nd->rows * nd->w, e) {
        LLVMValueRef v = load(x, x->VT, accptr(x, i, e), x->valign), s = v;
        if (x->V > 1) {
            s = LLVMBuildExtractElement(x->b, v, ci32(x, 0), "");
            for (int l = 1; l < x->V; l++) s = fadd(x, s, LLVMBuildExtractElement(x->b, v, ci32(x, l), ""));
        }
        store(x, s, gep(x, x->T, dst, e), x->esz);
    }
}

/* The gradient outputs are one copy per parameter when every parameter has exactly one
 * gradient value (write_grads). Then a value that is a sum over the batch, read by nothing
 * else, is finished straight into its place in the output: no slot, no copy. */
static int grads_one_each(const tprog *p) {
    int64_t covered = 0;
    for (int k = 0; k < p->ngrad; k++) {
        const tnode *nd = &p->nodes[p->gval[k]];
        covered += (int64_t)nd->rows * nd->w;
        for (int q = 0; q < k; q++)
            if (p->gparam[q] == p->gparam[k]) return 0;
    }
    return covered == p->param_total;
}

static void plan_direct_grads(cgx *x) {
    const tprog *p = x->p;
    for (int i = 0; i < p->nn; i++) x->dgrad[i] = -1;
    if (!grads_one_each(p)) return;
    for (int k = 0; k < p->ngrad; k++) {
        int v = p->gval[k];
        if (t_ops[p->nodes[v].op].flags & TF_RED) x->dgrad[v] = x->poff[p->gparam[k]];
    }
    for (int k = 0; k < p->nouts; k++) x->dgrad[p->outs[k]] = -1;
    for (int i = 0; i < p->nn; i++)
        for (int k = 0; x->live[i] && k < p->nodes[i].nin; k++) x->dgrad[p->nodes[i].in[k]] = -1;
    for (int k = 0; k < p->ngrad; k++)   /* a value given for two parameters: copied */
        for (int q = 0; q < k; q++)
            if (p->gval[q] == p->gval[k]) x->dgrad[p->gval[k]] = -1;
}

/* gradient outputs: outs[nouts] = 0, then += every gradient value at its parameter's offset */
/* The gradient outputs into outs[nouts]. Usually every parameter has exactly one gradient
 * value (grad.c sums every use of a parameter into one): then each is one copy of its
 * [rows, w] values, and nothing is zeroed first. Otherwise (a parameter without a gradient,
 * or listed twice) the array is zeroed and every value added. */
static void write_grads(cgx *x) {
    const tprog *p = x->p;
    if (grads_one_each(p)) {
        for (int k = 0; k < p->ngrad; k++) {
            int v = p->gval[k];
            const tnode *nd = ND(x, v);
            if (x->dgrad[v] >= 0) continue;   /* finished in place (red_finish) */
            LLVMValueRef d = gep(x, x->T, x->gradp, ci64(x, x->poff[p->gparam[k]]));
            int64_t ne = (int64_t)nd->rows * nd->w;
            if (nd->op == T_CONST) {
                cgloop L;
                FOR(x, L, ne, e) store(x, uelem(x, v, ci64(x, 0), ci64(x, 0)), gep(x, x->T, d, e), x->esz);
            } else {
                LLVMBuildMemCpy(x->b, d, (unsigned)x->esz, ubase(x, v), (unsigned)x->esz, ci64(x, ne * x->esz));
            }
        }
        return;
    }
    LLVMBuildMemSet(x->b, x->gradp, LLVMConstInt(LLVMInt8TypeInContext(x->C), 0, 0), ci64(x, p->param_total * x->esz),
                    (unsigned)x->esz);
    for (int k = 0; k < p->ngrad; k++) {
        int v = p->gval[k];
        const tnode *nd = ND(x, v);
        cgloop Lr, Lj;
        FOR(x, Lr, nd->rows, r)
            FOR(x, Lj, nd->w, j) {
                LLVMValueRef e = LLVMBuildNSWAdd(x->b, LLVMBuildNSWMul(x->b, r, ci64(x, nd->w), ""), j, "");
                LLVMValueRef d = gep(x, x->T, x->gradp, LLVMBuildNSWAdd(x->b, ci64(x, x->poff[p->gparam[k]]), e, ""));
                store(x, fadd(x, load(x, x->T, d, x->esz), uelem(x, v, r, j)), d, x->esz);
            }
    }
}

static void tile_node(cgx *x, int i) {
    const tnode *nd = ND(x, i);
    if (nd->rows != 0) return;   /* unbatched: prologue */
    if (x->virt[i]) return;      /* fusion: computed at its use (fval) */
    switch ((t_op)nd->op) {
    case T_ARG: load_arg(x, i); return;
    case T_MATMUL: emit_matmul(x, i, -1); return;
    case T_GATHER: emit_gather(x, i); return;
    case T_CONCAT: {
        int64_t at = 0;
        for (int k = 0; k < nd->nin; k++) {
            int64_t w = ND(x, nd->in[k])->w;
            vcopy(x, i, at, nd->in[k], 0, w);
            at += w;
        }
        return;
    }
    case T_ROWSUM: {
        const tnode *a = ND(x, nd->in[0]);   /* batched, as the node is */
        cgloop L;
        LLVMValueRef s = bload(x, nd->in[0], ci64(x, 0));
        RFOR(x, L, ci64(x, 1), ci64(x, a->w), j, &s, 1) s = fadd(x, s, bload(x, nd->in[0], j));
        bstore(x, i, ci64(x, 0), s);
        return;
    }
    case T_MATMUL_NT: emit_matmul(x, i, -1); return;
    case T_SCATTER: emit_scatter(x, i); return;
    case T_LU_FWD: case T_LU_INV: case T_LU_U: case T_LU_LT: case T_LU_UT: case T_LU_INVT: emit_lu(x, i); return;
    case T_RANDN: case T_RANDLOGISTIC: emit_rand(x, i); return;
    case T_LOOP_BEGIN:
        bvcopy(x, i, nd->in[0]);
        loop_open(x, &x->trip, ci64(x, 0), ci64(x, nd->iattr[0]), 0, NULL);
        return;
    case T_LOOP_END:
        trip_end(x, i, 0);
        return;
    default:
        break;
    }
    if (!(t_ops[nd->op].flags & TF_EW)) {
        cg_fail(x, "%s: %%%d: codegen: batched %s is not supported", x->p->name, i, t_ops[nd->op].name);
        return;
    }
    if (x->rmm[i] >= 0) { emit_matmul(x, x->rmm[i], i); return; }   /* fusion: the product's epilogue */
    cgloop L;
    FOR(x, L, nd->w, j) bstore(x, i, j, fnode(x, i, j));
}

/* End of a tensor-IR loop at LOOP_END e. The LOOP_BEGIN b takes the next state before every
 * trip but the first; after the last trip e's value is the next state. Unless b is used
 * after the loop, e shares b's slot and the copy is unconditional. */
static void trip_end(cgx *x, int e, int unbatched) {
    const tnode *nd = ND(x, e);
    int next = nd->in[0], b = nd->in[1];
    if (x->sep[e]) {
        LLVMValueRef more = LLVMBuildICmp(x->b, LLVMIntSLT, LLVMBuildNSWAdd(x->b, x->trip.iv, ci64(x, 1), ""),
                                          ci64(x, ND(x, b)->iattr[0]), "");
        LLVMBasicBlockRef cp = LLVMAppendBasicBlockInContext(x->C, x->fn, "carry");
        LLVMBasicBlockRef cont = LLVMAppendBasicBlockInContext(x->C, x->fn, "carried");
        LLVMBuildCondBr(x->b, more, cp, cont);
        LLVMPositionBuilderAtEnd(x->b, cp);
        if (unbatched) ucopy(x, b, next); else bvcopy(x, b, next);
        LLVMBuildBr(x->b, cont);
        LLVMPositionBuilderAtEnd(x->b, cont);
        loop_close(x, &x->trip, NULL, 1);
        if (unbatched) ucopy(x, e, next); else bvcopy(x, e, next);
    } else {
        if (next != b) {
            if (unbatched) ucopy(x, b, next); else bvcopy(x, b, next);
        }
        loop_close(x, &x->trip, NULL, 1);
    }
}

/* ---------------------------------------------------------------- one program */

static int64_t round64(int64_t v) { return (v + 63) & ~(int64_t)63; }

/* ---------------------------------------------------------------- fusion */

static int batched_ew(const tnode *n) { return n->rows == 0 && (t_ops[n->op].flags & TF_EW); }

/* Which nodes are virtual (no slot; docs/codegen.md, "Fusion"). A batched value used exactly
 * once (counted over live nodes, with multiplicity, outputs and gradient values included),
 * by a batched elementwise node of the same width (a width-1 operand is broadcast by bptr,
 * so its feature index is not the user's) in the same section and the same loop region
 * (the body of one LOOP_BEGIN..LOOP_END or outside every loop: a value computed later than
 * its position must see the same operands, and a loop body runs several times), can be
 * computed at its use instead of being stored and loaded back:
 *  - an elementwise node becomes VIRT_EW: its user computes it in registers (fval);
 *  - a MATMUL or MATMUL_NT becomes VIRT_MM, a leaf of the tree of virtual elementwise nodes
 *    under the materialized root above it; the tree is emitted at the root's position, as
 *    the product's epilogue (mm_block). At most one product per tree: the kernel of one
 *    product is blocked over its output features, a second would have to be recomputed.
 * Every reader of a virtual node is an elementwise node (only those read through fval), so
 * no other code path can meet a node without a slot. Returns -1 if out of memory. */
static int plan_fusion(cgx *x) {
    const tprog *p = x->p;
    int nn = p->nn;
    x->nfused = 0;
    for (int i = 0; i < nn; i++) {
        x->virt[i] = 0;
        x->rmm[i] = -1;
    }
    if (x->o->no_fuse || nn == 0) return 0;
    int32_t *uses = calloc((size_t)nn, sizeof *uses), *user = malloc(sizeof *user * (size_t)nn);
    int32_t *reg = malloc(sizeof *reg * (size_t)nn);
    if (!uses || !user || !reg) {
        free(uses); free(user); free(reg);
        cg_fail(x, "out of memory");
        return -1;
    }
    int lb = -1;
    for (int i = 0; i < nn; i++) {
        const tnode *nd = &p->nodes[i];
        user[i] = -1;
        if (nd->op == T_LOOP_BEGIN) lb = i;
        reg[i] = nd->op == T_LOOP_BEGIN || nd->op == T_LOOP_END ? -1 : lb;
        if (nd->op == T_LOOP_END) lb = -1;
        if (!x->live[i]) continue;
        for (int k = 0; k < nd->nin; k++) {
            uses[nd->in[k]]++;
            user[nd->in[k]] = i;
        }
    }
    /* an output or a gradient value is stored whatever its other uses */
    for (int k = 0; k < p->nouts; k++) { uses[p->outs[k]] += 2; user[p->outs[k]] = -1; }
    for (int k = 0; k < p->ngrad; k++) { uses[p->gval[k]] += 2; user[p->gval[k]] = -1; }
#define FUSABLE(i) (x->live[i] && uses[i] == 1 && user[i] >= 0 && batched_ew(&p->nodes[user[i]]) \
                    && p->nodes[user[i]].w == p->nodes[i].w && x->sec[user[i]] == x->sec[i] && reg[user[i]] == reg[i])
    /* root[i]: where a virtual node i is computed, its tree's materialized root. A node whose
     * root is more than CG_FUSE_SPAN nodes later stays materialized: its operands would live
     * until the root (a chain through the whole program, like the sum of the layers'
     * log-determinant terms, would keep one value per layer alive to the end). Decided last
     * node first, so a node's user is settled before the node. */
    int32_t *rootv = malloc(sizeof *rootv * (size_t)nn);
    if (!rootv) {
        free(uses); free(user); free(reg);
        cg_fail(x, "out of memory");
        return -1;
    }
    for (int i = nn - 1; i >= 0; i--) {
        rootv[i] = i;
        if (!batched_ew(&p->nodes[i]) || !FUSABLE(i)) continue;
        int r = x->virt[user[i]] ? rootv[user[i]] : user[i];
        if (r - i > CG_FUSE_SPAN) continue;
        x->virt[i] = VIRT_EW;
        rootv[i] = r;
        x->nfused++;
    }
    for (int i = 0; i < nn; i++) {
        const tnode *nd = &p->nodes[i];
        if ((nd->op != T_MATMUL && nd->op != T_MATMUL_NT) || nd->rows != 0 || !FUSABLE(i)) continue;
        int r = user[i];
        while (x->virt[r] == VIRT_EW) r = user[r];
        if (r - i > CG_FUSE_SPAN) continue;
        if (x->rmm[r] >= 0) continue;
        x->rmm[r] = i;
        x->virt[i] = VIRT_MM;
        x->nfused++;
    }
#undef FUSABLE
    free(uses); free(user); free(reg); free(rootv);
    return 0;
}

/* Slots of the batched values, from offset base; returns the workspace's end, or -1.
 * A value is live from its node to its last use, where a use is at the position where the
 * user's code is emitted: a virtual node's (fusion) is its root's. A value used inside a
 * tensor-IR loop body but defined before the loop lives to the loop's end (the body runs
 * again); a LOOP_BEGIN lives as long as a LOOP_END that shares its slot (that slot holds
 * the loop's result), and, conservatively, at least to its LOOP_END, where the next state is
 * copied into it (not needed for correctness: a body value that took the slot is dead or is
 * the next state by then; kept so the state slot is never shared within a trip). Outputs live to the end of the tile.
 * Going through the nodes in order, a node takes a free slot of its size (or new space)
 * before the values that die at its position are freed, so no node writes over its own
 * operands. Slots are exact sizes (w vectors of V lanes, 64-byte aligned), reused by the
 * widths that recur in a flow. */
static int64_t plan_tile_slots(cgx *x, int64_t base) {
    const tprog *p = x->p;
    int nn = p->nn;
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)nn), *last = malloc(sizeof(int32_t) * (size_t)nn);
    int32_t *user = malloc(sizeof(int32_t) * (size_t)nn), *reg = malloc(sizeof(int32_t) * (size_t)nn);
    int32_t *loop_end = malloc(sizeof(int32_t) * (size_t)nn), *head = malloc(sizeof(int32_t) * (size_t)(nn + 1));
    int32_t *next = malloc(sizeof(int32_t) * (size_t)nn);
    int64_t *fsize = malloc(sizeof(int64_t) * (size_t)nn), *foff = malloc(sizeof(int64_t) * (size_t)nn);
    int64_t end = base;
    if (!pos || !last || !user || !reg || !loop_end || !head || !next || !fsize || !foff) {
        cg_fail(x, "out of memory");
        end = -1;
        goto done;
    }
    int lb = -1;
    for (int i = 0; i < nn; i++) {
        const tnode *nd = &p->nodes[i];
        user[i] = -1;
        last[i] = -1;
        loop_end[i] = -1;
        if (nd->op == T_LOOP_BEGIN) lb = i;
        reg[i] = nd->op == T_LOOP_BEGIN ? -1 : lb;
        if (nd->op == T_LOOP_END) { if (lb >= 0) loop_end[lb] = i; lb = -1; reg[i] = -1; }
        if (!x->live[i]) continue;
        for (int k = 0; k < nd->nin; k++) user[nd->in[k]] = i;
    }
    for (int i = nn - 1; i >= 0; i--) pos[i] = x->virt[i] && user[i] > i ? pos[user[i]] : i;
    for (int u = 0; u < nn; u++) {
        const tnode *nd = &p->nodes[u];
        if (!x->live[u]) continue;
        for (int k = 0; k < nd->nin; k++) {
            int v = nd->in[k], at = pos[u];
            if (reg[u] >= 0 && reg[v] != reg[u] && v < reg[u] && loop_end[reg[u]] > at) at = loop_end[reg[u]];
            if (at > last[v]) last[v] = at;
        }
    }
    for (int k = 0; k < p->nouts; k++) last[p->outs[k]] = nn;
    for (int b = 0; b < nn; b++) {
        if (p->nodes[b].op != T_LOOP_BEGIN || loop_end[b] < 0) continue;
        int e = loop_end[b];
        if (last[b] < e) last[b] = e;
        if (!x->sep[e] && last[e] > last[b]) last[b] = last[e];
    }
    /* the values that die at each position */
    for (int i = 0; i <= nn; i++) head[i] = -1;
    for (int i = 0; i < nn; i++) {
        if (!x->live[i] || x->virt[i] || p->nodes[i].rows != 0 || x->slot[i] >= 0) continue;
        if (last[i] < i) last[i] = i;
        next[i] = head[last[i]];
        head[last[i]] = i;
    }
    int nfree = 0;
    for (int i = 0; i < nn; i++) {
        const tnode *nd = &p->nodes[i];
        if (x->live[i] && !x->virt[i] && nd->rows == 0 && !(nd->op == T_LOOP_END && !x->sep[i])) {
            int64_t bytes = round64((int64_t)nd->w * x->V * x->esz);
            int f = nfree - 1;
            while (f >= 0 && fsize[f] != bytes) f--;
            if (f >= 0) {
                x->slot[i] = foff[f];
                fsize[f] = fsize[nfree - 1];
                foff[f] = foff[nfree - 1];
                nfree--;
            } else {
                x->slot[i] = end;
                end += bytes;
            }
        }
        for (int d = head[i]; d >= 0; d = next[d]) {
            if (p->nodes[d].op == T_LOOP_END && !x->sep[d]) continue;   /* its LOOP_BEGIN's slot */
            fsize[nfree] = round64((int64_t)p->nodes[d].w * x->V * x->esz);
            foff[nfree] = x->slot[d];
            nfree++;
        }
    }
    for (int e = 0; e < nn; e++)   /* a LOOP_END that shares its LOOP_BEGIN's slot */
        if (x->live[e] && p->nodes[e].op == T_LOOP_END && p->nodes[e].rows == 0 && !x->sep[e])
            x->slot[e] = x->slot[p->nodes[e].in[1]];
done:
    free(pos); free(last); free(user); free(reg); free(loop_end); free(head); free(next); free(fsize); free(foff);
    return end;
}

static void add_attr(cgx *x, LLVMValueRef f, LLVMAttributeIndex at, const char *name, uint64_t val) {
    LLVMAddAttributeAtIndex(f, at, LLVMCreateEnumAttribute(x->C, LLVMGetEnumAttributeKindForName(name, strlen(name)), val));
}
static void add_str_attr(cgx *x, LLVMValueRef f, const char *k, const char *v) {
    LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex, LLVMCreateStringAttribute(x->C, k, (unsigned)strlen(k), v, (unsigned)strlen(v)));
}

/* A function with the kernel ABI (tir.h), or with seg != 0 a segment of a program's code:
 * the same arguments, then the tile's first row (i64 tbase) and the segment's offset table
 * (soff); never inlined. Makes it the current function (x->fn, x->a_*). */
static LLVMTypeRef kernel_fty(cgx *x, int seg) {
    LLVMTypeRef pt[10] = { x->i64, x->i64, x->i64, x->ptr, x->ptr, x->ptr, x->ptr, x->ptr, x->i64, x->ptr };
    return LLVMFunctionType(LLVMVoidTypeInContext(x->C), pt, seg ? 10 : 8, 0);
}
static LLVMValueRef kernel_fn(cgx *x, cg_module *m, const char *name, int seg) {
    LLVMTypeRef fty = kernel_fty(x, seg);
    LLVMValueRef f = LLVMAddFunction(x->M, name, fty);
    static const char *const pname[10] = { "n", "row0", "seed", "args", "scalars", "outs", "params", "ws", "tbase", "offs" };
    for (unsigned k = 0; k < (seg ? 10u : 8u); k++) LLVMSetValueName2(LLVMGetParam(f, k), pname[k], strlen(pname[k]));
    add_attr(x, f, LLVMAttributeFunctionIndex, "nounwind", 0);
    for (unsigned k = 4; k <= 8; k++) add_attr(x, f, k, "nocapture", 0);
    for (unsigned k = 4; k <= 7; k++) add_attr(x, f, k, "readonly", 0);
    add_attr(x, f, 7, "noalias", 0);
    add_attr(x, f, 8, "noalias", 0);
    add_attr(x, f, 8, "align", 64);
    if (seg) {   /* the offset table */
        add_attr(x, f, 10, "nocapture", 0);
        add_attr(x, f, 10, "readonly", 0);
        add_attr(x, f, 10, "noalias", 0);
    }
    add_str_attr(x, f, "target-cpu", m->cpu);
    add_str_attr(x, f, "target-features", m->features);
    if (x->V > 1) {
        char bits[16];
        int nb = native_bytes(&x->isa);
        int vb = x->V * x->esz;
        snprintf(bits, sizeof bits, "%d", 8 * (vb < nb ? vb : nb));
        add_str_attr(x, f, "prefer-vector-width", bits);
        snprintf(bits, sizeof bits, "%d", 8 * vb);
        add_str_attr(x, f, "min-legal-vector-width", bits);
    }
    if (seg) {   /* built in a module of its own, called through the program's call table */
        add_attr(x, f, LLVMAttributeFunctionIndex, "noinline", 0);
    }
    x->fn = f;
    x->a_n = LLVMGetParam(f, 0);
    x->a_row0 = LLVMGetParam(f, 1);
    x->a_seed = LLVMGetParam(f, 2);
    x->a_args = LLVMGetParam(f, 3);
    x->a_scalars = LLVMGetParam(f, 4);
    x->a_outs = LLVMGetParam(f, 5);
    x->a_params = LLVMGetParam(f, 6);
    x->a_ws = x->a_tws = LLVMGetParam(f, 7);
    return f;
}

/* the user pointers of the current function (entry block) */
static void load_io(cgx *x) {
    const tprog *p = x->p;
    for (int k = 0; k < p->nargs; k++) x->argp[k] = load(x, x->ptr, gep(x, x->ptr, x->a_args, ci64(x, k)), 8);
    for (int k = 0; k < p->nouts; k++) x->outp[k] = load(x, x->ptr, gep(x, x->ptr, x->a_outs, ci64(x, k)), 8);
}

/* the tile of a pair that the code being emitted is for */
static void tile_ctx(cgx *x, int t) {
    x->a_tws = x->pt_tws[t];
    x->tbase = x->pt_base[t];
    x->tmask = x->pt_mask[t];
}

/* the mask of the tile's valid rows (x->tbase set) */
static void tile_mask(cgx *x) {
    x->tmask = NULL;
    if (x->V > 1) {
        LLVMValueRef rem = LLVMBuildNSWSub(x->b, x->a_n, x->tbase, "");
        LLVMValueRef valid = sel(x, LLVMBuildICmp(x->b, LLVMIntSLT, rem, ci64(x, x->V), ""), rem, ci64(x, x->V));
        /* no rows for the second tile of a pair past n (Tile pairs): an empty mask */
        if (x->pairs) valid = sel(x, LLVMBuildICmp(x->b, LLVMIntSLT, valid, ci64(x, 0), ""), ci64(x, 0), valid);
        LLVMValueRef vi = splat_i32(x, LLVMBuildTrunc(x->b, valid, x->i32, ""));
        LLVMValueRef iota = lane_stride(x, 1);
        x->tmask = LLVMBuildICmp(x->b, LLVMIntULT, iota, vi, "mask");
    }
}

/* The code is vectorized, tiled and scheduled explicitly, and every value lives in the
 * workspace, so LLVM's middle end has little to add: -O1 and -O2 run short function
 * pipelines (cleanup of the builder's output); -O3 runs the whole default<O3> pipeline.
 * Measured on a 10-layer RealNVP, MAF and the Glow-style flow (docs/codegen.md): the -O2
 * pipeline compiles 2-3x faster than default<O2> for the same kernel speed. */
static void set_types(cgx *x) {
    x->i32 = LLVMInt32TypeInContext(x->C);
    x->i64 = LLVMInt64TypeInContext(x->C);
    x->f64 = LLVMDoubleTypeInContext(x->C);
    x->ptr = LLVMPointerTypeInContext(x->C, 0);
    x->T = x->f64mode ? x->f64 : LLVMFloatTypeInContext(x->C);
    x->VT = x->V == 1 ? x->T : LLVMVectorType(x->T, (unsigned)x->V);
    x->vi32 = LLVMVectorType(x->i32, (unsigned)x->V);
}

static const char *opt_pipeline(int opt_level) {
    static const char *const pipelines[4] = {
        "default<O0>",
        "function(sroa,early-cse,simplifycfg)",
        "function(sroa,early-cse,instcombine,simplifycfg)",
        "default<O3>",
    };
    return pipelines[opt_level < 0 ? 0 : opt_level > 3 ? 3 : opt_level];
}

/* A segment is built in a module of its own (same target and data layout), so that its IR
 * can be compared with the segments built before (close_segment). With o->segment_sink
 * the module has an LLVM context of its own too, and goes to the sink once the segment is
 * complete: the sink verifies, optimizes and compiles it (the JIT: on worker threads, while
 * the next segments are built) and frees its IR and its context (whose uniqued constants
 * would otherwise pile up for the whole program), so the memory of a program's compilation
 * does not grow with its size. Without a sink (AOT), a new segment's module is linked into
 * the program's module. */
static void open_segment_module(cgx *x, const char *name) {
    x->seg_ctx_own = x->o->segment_sink != NULL;
    if (x->seg_ctx_own) {
        x->C = LLVMContextCreate();
        set_types(x);
    }
    x->b = LLVMCreateBuilderInContext(x->C);
    LLVMModuleRef sm = LLVMModuleCreateWithNameInContext(name, x->C);
    LLVMSetTarget(sm, LLVMGetTarget(x->mainM));
    LLVMSetModuleDataLayout(sm, LLVMGetModuleDataLayout(x->mainM));
    x->M = sm;
    memset(x->segconst, 0, sizeof(LLVMValueRef) * (size_t)(x->p->nn > 0 ? x->p->nn : 1));
}

/* back to the main module's context and builder; the segment's module is returned, and its
 * context in *ctx if it has one of its own (else NULL) */
static LLVMModuleRef leave_segment_module(cgx *x, LLVMContextRef *ctx) {
    LLVMModuleRef sm = x->M;
    *ctx = x->seg_ctx_own ? x->C : NULL;
    LLVMDisposeBuilder(x->b);
    x->b = x->mainB;
    x->C = x->mainC;
    x->M = x->mainM;
    x->seg_ctx_own = 0;
    set_types(x);
    return sm;
}

/* hand a segment's module and its context over to the sink */
static void finish_segment_module(cgx *x, LLVMContextRef C, LLVMModuleRef sm, const char *fn) {
    char err[1024] = "";
    if (x->o->segment_sink(x->o->segment_ctx, &x->tgt, C, sm, fn, err, sizeof err)) cg_fail(x, "%s", err[0] ? err : "segment sink failed");
}

static uint64_t fnv1a(const char *t, size_t n, uint64_t h) {
    for (size_t k = 0; k < n; k++) h = (h ^ (unsigned char)t[k]) * 0x100000001b3ull;
    return h;
}

static int link_into(cgx *x, LLVMModuleRef dst, LLVMModuleRef src) {
    if (!LLVMLinkModules2(dst, src)) return 0;
    cg_fail(x, "codegen: cannot link the segments");
    return -1;
}

/* a new segment's module (in the main context), to be linked into mainM later */
static void pend_segment(cgx *x, LLVMModuleRef sm, const char *fn) {
    if (x->npend == (int)(sizeof x->pend / sizeof x->pend[0])) {   /* 2^64 segments: cannot happen */
        LLVMDisposeModule(sm);
        cg_fail(x, "codegen: too many segments at %s", fn);
        return;
    }
    x->pend[x->npend] = sm;
    x->prank[x->npend++] = 0;
    while (x->npend >= 2 && x->prank[x->npend - 1] == x->prank[x->npend - 2]) {
        link_into(x, x->pend[x->npend - 2], x->pend[x->npend - 1]);
        x->prank[x->npend - 2]++;
        x->npend--;
    }
}

/* links the waiting segments into mainM and makes their functions internal */
static int link_pending(cgx *x) {
    int rc = 0;
    for (; x->npend > 1; x->npend--) rc |= link_into(x, x->pend[x->npend - 2], x->pend[x->npend - 1]);
    if (x->npend == 1) rc |= link_into(x, x->mainM, x->pend[0]);
    x->npend = 0;
    if (rc) return -1;
    for (int k = 0; k < x->nsc; k++) {
        LLVMValueRef f = LLVMGetNamedFunction(x->mainM, x->sc[k].name);
        if (f && !LLVMIsDeclaration(f)) LLVMSetLinkage(f, LLVMInternalLinkage);
    }
    return 0;
}

/* Back in the program's function after a segment. A segment whose module (built with the
 * placeholder names "nfc.seg", written as bitcode) is byte for byte that of a segment built
 * before is dropped, and the earlier function is called instead: the same IR is the same
 * code, and the offset table makes it compute this segment's values, so sharing is exact
 * whatever made the two equal. A new segment gets its own name (seg_name) and goes to the
 * sink (or, without one, is linked into the program's module). The call, the function and
 * this segment's offset table, is added to the section's list (emit_section). */
static void close_segment(cgx *x, LLVMValueRef main_fn, LLVMValueRef *margs) {
    LLVMPositionBuilderAtEnd(x->ob, x->seg_entry);
    LLVMBuildBr(x->ob, x->seg_body);
    LLVMDisposeBuilder(x->ob);
    x->ob = NULL;
    x->reloc = 0;
    LLVMMemoryBufferRef bc = LLVMWriteBitcodeToMemoryBuffer(x->M);
    size_t len = LLVMGetBufferSize(bc);
    char *txt = xmalloc(len + 1);
    memcpy(txt, LLVMGetBufferStart(bc), len);
    txt[len] = 0;
    LLVMDisposeMemoryBuffer(bc);
    uint64_t h = fnv1a(txt, len, 0xcbf29ce484222325ull);
    int hit = -1;
    for (int k = 0; k < x->nsc && hit < 0; k++)
        if (x->sc[k].h == h && x->sc[k].len == len && !memcmp(x->sc[k].txt, txt, len)) hit = k;
    char fn[512];
    LLVMContextRef sctx = NULL;
    LLVMModuleRef sm = NULL;
    if (hit >= 0) {
        snprintf(fn, sizeof fn, "%s", x->sc[hit].name);
        LLVMDisposeModule(leave_segment_module(x, &sctx));
        if (sctx) LLVMContextDispose(sctx);
        sctx = NULL;
        x->nshared++;
        free(txt);
    } else {
        snprintf(fn, sizeof fn, "%s", x->seg_name);
        LLVMSetValueName2(x->seg_fn, fn, strlen(fn));
        LLVMSetModuleIdentifier(x->M, fn, strlen(fn));
        if (x->nsc == x->cap_sc) {
            int nc = x->cap_sc ? 2 * x->cap_sc : 32;
            struct segcode *ns = realloc(x->sc, sizeof *ns * (size_t)nc);
            if (!ns) cg_fail(x, "out of memory");
            else { x->sc = ns; x->cap_sc = nc; }
        }
        if (x->nsc < x->cap_sc) x->sc[x->nsc++] = (struct segcode){ h, len, txt, xstrdup(fn) };
        else free(txt);
        sm = leave_segment_module(x, &sctx);
        if (!sctx) {   /* no sink: into the program's module (link_pending), where it is internal */
            pend_segment(x, sm, fn);
            sm = NULL;
        }
    }
    LLVMValueRef callee = LLVMGetNamedFunction(x->mainM, fn);
    if (!callee) {   /* compiled by the sink: the program's module declares it */
        callee = LLVMAddFunction(x->mainM, fn, kernel_fty(x, 1));
        add_attr(x, callee, LLVMAttributeFunctionIndex, "nounwind", 0);
    }
    /* this call's offset table */
    LLVMValueRef tab = LLVMConstNull(x->ptr);
    if (x->nso > 0) {
        LLVMValueRef *c = xmalloc(sizeof(LLVMValueRef) * (size_t)x->nso);
        for (int k = 0; k < x->nso; k++) c[k] = ci64(x, x->so[k].v);
        tab = const_array(x->mainM, x->i64, c, (uint64_t)x->nso, "segoffs", 8);
        free(c);
    }
    if (x->ncalls + 2 > x->cap_calls) {
        int nc = x->cap_calls ? 2 * x->cap_calls : 64;
        LLVMValueRef *ncl = realloc(x->calls, sizeof *ncl * (size_t)nc);
        if (!ncl) cg_fail(x, "out of memory");
        else { x->calls = ncl; x->cap_calls = nc; }
    }
    if (x->ncalls + 2 <= x->cap_calls) {
        x->calls[x->ncalls++] = callee;
        x->calls[x->ncalls++] = tab;
    }
    x->fn = main_fn;
    x->a_n = margs[0];
    x->a_row0 = margs[1];
    x->a_seed = margs[2];
    x->a_args = margs[3];
    x->a_scalars = margs[4];
    x->a_outs = margs[5];
    x->a_params = margs[6];
    x->a_ws = x->a_tws = margs[7];
    x->tbase = margs[8];
    LLVMPositionBuilderAtEnd(x->b, x->seg_caller);
    if (sm) finish_segment_module(x, sctx, sm, fn);
}

/* does the prologue emit code for node i (a live node)? reductions zero their accumulators,
 * LU nodes compute exp(+-diag), other unbatched nodes of the prologue compute their value
 * unless read in place */
static int prologue_code(cgx *x, int i) {
    const tnode *nd = ND(x, i);
    if (t_ops[nd->op].flags & TF_RED) return 1;
    if (nd->op == T_LU_FWD || nd->op == T_LU_INV || nd->op == T_LU_U || nd->op == T_LU_UT || nd->op == T_LU_INVT) return 1;
    if (nd->rows == 0 || x->sec[i] != SEC_PROLOGUE) return 0;
    return nd->op != T_PARAM && nd->op != T_CONST && nd->op != T_CONSTTENSOR;
}

/* start segment function number *nseg of program `name` (its own module with a sink); a
 * segment starting at node i is named <name>.seg<k>.n<i>.<op> (what a profile shows) if its
 * code is new (close_segment). Its entry block holds the loads of its offset table. */
static void open_segment(cgx *x, cg_module *m, const char *name, int *nseg, int i) {
    if (i < 0) snprintf(x->seg_name, sizeof x->seg_name, "%s.seg%d.out", name, (*nseg)++);
    else snprintf(x->seg_name, sizeof x->seg_name, "%s.seg%d.n%d.%s", name, (*nseg)++, i, t_ops[x->p->nodes[i].op].name);
    x->seg_caller = LLVMGetInsertBlock(x->b);
    open_segment_module(x, "nfc.seg");
    x->seg_fn = kernel_fn(x, m, "nfc.seg", 1);
    x->seg_entry = LLVMAppendBasicBlockInContext(x->C, x->seg_fn, "entry");
    x->seg_body = LLVMAppendBasicBlockInContext(x->C, x->seg_fn, "body");
    x->ob = LLVMCreateBuilderInContext(x->C);
    LLVMPositionBuilderAtEnd(x->ob, x->seg_entry);
    x->offs = LLVMGetParam(x->seg_fn, 9);
    x->nso = 0;
    x->reloc = 1;
    LLVMPositionBuilderAtEnd(x->b, x->seg_body);
    load_io(x);
    x->tbase = LLVMGetParam(x->seg_fn, 8);
    tile_mask(x);
    if (x->in_tiles && x->pairs) {   /* the pair: tiles tbase and tbase + V, copies 0 and 1 */
        for (int t = 0; t < 2; t++) {
            x->tbase = t ? LLVMBuildNSWAdd(x->b, x->pt_base[0], ci64(x, x->V), "") : LLVMGetParam(x->seg_fn, 8);
            tile_mask(x);
            x->pt_base[t] = x->tbase;
            x->pt_mask[t] = x->tmask;
            x->pt_tws[t] = t ? gep(x, x->T, x->a_ws, ci64(x, x->tile_ws / x->esz)) : x->a_ws;
        }
        tile_ctx(x, 0);
    }
}

/* ---------------------------------------------------------------- segments and their plan */

static uint64_t mix_u64(uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001b3ull + (h >> 29); }

/* A hash of what node i's code depends on apart from its offsets (op, shape, attributes,
 * index and constant contents, fusion, its operands' kinds); only the plan below uses it,
 * to find repeated layers: sharing itself is decided on the IR (close_segment). */
static uint64_t node_sig(cgx *x, int i) {
    if (x->sig[i]) return x->sig[i];
    const tnode *nd = ND(x, i);
    uint64_t h = 0xcbf29ce484222325ull, fb;
    memcpy(&fb, &nd->fattr[0], sizeof fb);
    h = mix_u64(h, ((uint64_t)nd->op << 48) ^ ((uint64_t)(uint32_t)nd->w << 16) ^ (uint64_t)nd->nin);
    /* a parameter's index only moves its offset */
    h = mix_u64(h, ((uint64_t)(uint32_t)nd->rows << 32) ^ (uint64_t)(uint32_t)(nd->op == T_PARAM ? 0 : nd->iattr[0]));
    h = mix_u64(h, ((uint64_t)(uint32_t)nd->iattr[1] << 32) ^ (uint64_t)(uint32_t)nd->naux);
    h = mix_u64(h, fb);
    h = mix_u64(h, ((uint64_t)x->virt[i] << 24) ^ ((uint64_t)x->sec[i] << 16) ^ ((uint64_t)x->sep[i] << 8)
                       ^ (uint64_t)(x->dgrad[i] >= 0) ^ ((uint64_t)(x->rmm[i] >= 0) << 1));
    if (nd->op == T_GATHER || nd->op == T_SCATTER)
        for (int k = 0; k < nd->naux; k++) h = mix_u64(h, (uint64_t)(uint32_t)x->p->ints[nd->aux + k]);
    if (nd->op == T_CONSTTENSOR)
        for (int64_t k = 0; k < (int64_t)nd->rows * nd->w; k++) {
            memcpy(&fb, &x->p->consts[nd->aux + k], sizeof fb);
            h = mix_u64(h, fb);
        }
    for (int k = 0; k < nd->nin; k++) {
        int a = nd->in[k];
        const tnode *in = ND(x, a);
        h = mix_u64(h, ((uint64_t)in->op << 40) ^ ((uint64_t)(uint32_t)in->w << 8) ^ (uint64_t)x->virt[a]);
        h = mix_u64(h, (uint64_t)(uint32_t)in->rows);
        if (x->virt[a] || in->rows != 0) h = mix_u64(h, node_sig(x, a));   /* computed inline, or a constant */
    }
    if (x->rmm[i] >= 0) h = mix_u64(h, node_sig(x, x->rmm[i]));
    if (!h) h = 1;
    return x->sig[i] = h;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t u = *(const uint64_t *)a, v = *(const uint64_t *)b;
    return u < v ? -1 : u > v;
}
/* does h occur at least twice in the sorted array s[0..n)? */
static int occurs_twice(const uint64_t *s, int n, uint64_t h) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (s[mid] < h) lo = mid + 1;
        else hi = mid;
    }
    return lo + 1 < n && s[lo] == h && s[lo + 1] == h;
}

/* the items that start a unit: products, sums over the batch and LU nodes */
static int anchor_op(int op) {
    if (op >= T_NUM_OPS) return 0;
    return op == T_MATMUL || op == T_MATMUL_NT || (t_ops[op].flags & TF_RED) || op == T_LU_FWD || op == T_LU_INV
        || op == T_LU_U || op == T_LU_UT || op == T_LU_INVT;
}

/* Cut n items (node indices in emission order; -1: the outputs, after the last node) into
 * segments; writes the end of each segment (exclusive) to ends and returns how many. The
 * items are cut into units: before every anchor, after the root of a fused product (its
 * epilogue done), after seg_nodes items, never inside a tensor-IR loop. So a layer is cut
 * the same way wherever it occurs, whatever precedes it. A unit that occurs more than once
 * (by node_sig, e.g. the same hidden layer in every coupling) is a segment of its own, or
 * with the units that always come with it (join), so that close_segment finds its code
 * again; runs of units that occur once are packed into segments of up to seg_nodes items
 * (fewer calls). */
static int plan_segments(cgx *x, const int *it, int n, int *ends) {
    int *ust = xmalloc(sizeof(int) * (size_t)(n + 1));
    uint64_t *uh = xmalloc(sizeof(uint64_t) * (size_t)(n + 1)), *sorted = xmalloc(sizeof(uint64_t) * (size_t)(n + 1));
    int nu = 0, inloop = 0, ulen = 0, S = x->seg_nodes, after_root = 0;
    for (int k = 0; k < n; k++) {
        if (it[k] < 0 && k > 0) { ulen++; continue; }   /* the outputs: with the last unit */
        int op = it[k] < 0 ? T_NUM_OPS : x->p->nodes[it[k]].op;
        if (k == 0 || (!inloop && (anchor_op(op) || after_root || ulen >= S))) { ust[nu++] = k; ulen = 0; }
        after_root = it[k] >= 0 && x->rmm[it[k]] >= 0;
        ulen++;
        if (op == T_LOOP_BEGIN) inloop = 1;
        if (op == T_LOOP_END) inloop = 0;
    }
    ust[nu] = n;
    for (int u = 0; u < nu; u++) {
        uint64_t h = (uint64_t)(ust[u + 1] - ust[u]);
        for (int k = ust[u]; k < ust[u + 1]; k++) h = mix_u64(h, it[k] < 0 ? 0x5eedull : node_sig(x, it[k]));
        uh[u] = sorted[u] = h;
    }
    qsort(sorted, (size_t)nu, sizeof *sorted, cmp_u64);
    /* join[u]: unit u is always followed by unit u + 1's kind, which is always preceded by
     * u's: together they occur exactly as often as each alone, so one segment for both
     * shares as much code as two, with one call instead of two (an MLP's products) */
    char *join = xmalloc((size_t)nu + 1);
    for (int u = 0; u + 1 < nu; u++) {
        int ok = 1;
        for (int v = 0; v < nu && ok; v++) {
            if (uh[v] == uh[u]) ok = v + 1 < nu && uh[v + 1] == uh[u + 1];
            if (ok && uh[v] == uh[u + 1]) ok = v > 0 && uh[v - 1] == uh[u];
        }
        join[u] = (char)ok;
    }
    if (nu > 0) join[nu - 1] = 0;
    int ng = 0, cnt = 0;
    for (int u = 0; u < nu;) {
        int len = ust[u + 1] - ust[u];
        if (occurs_twice(sorted, nu, uh[u])) {
            if (cnt > 0) ends[ng++] = ust[u];
            int e = u + 1;
            while (join[e - 1] && ust[e + 1] - ust[u] <= S) e++;
            ends[ng++] = ust[e];
            cnt = 0;
            u = e;
            continue;
        }
        if (cnt > 0 && cnt + len > S) { ends[ng++] = ust[u]; cnt = 0; }
        cnt += len;
        u++;
    }
    free(join);
    if (cnt > 0) ends[ng++] = n;
    free(ust);
    free(uh);
    free(sorted);
    return ng;
}

typedef void (*item_fn)(cgx *x, int i);

/* does item i emit a product (emit_matmul: the product itself, or the root of its fused
 * epilogue)? */
static int mm_item(cgx *x, int i) {
    if (i < 0) return 0;
    const tnode *nd = ND(x, i);
    if (nd->rows != 0 || (x->virt[i] && x->rmm[i] < 0)) return 0;
    return x->rmm[i] >= 0 || nd->op == T_MATMUL || nd->op == T_MATMUL_NT;
}

/* The n items of a segment for both tiles of a pair. A product is emitted once for both
 * (pair_mm: each weight loaded is used for two tiles). Each run of other items is a loop of
 * one or two trips, one per tile that has rows, with the tile's copy of the workspace, its
 * first row and its mask: their code is emitted once. A tile past n computes only
 * products, on its copy of the workspace, whose values nothing uses. A segment with a
 * tensor-IR loop is one run. */
static void emit_pair(cgx *x, const int *it, int n, item_fn f) {
    int loop = 0;
    for (int k = 0; k < n; k++)
        if (it[k] >= 0 && (ND(x, it[k])->op == T_LOOP_BEGIN || ND(x, it[k])->op == T_LOOP_END)) loop = 1;
    for (int k = 0; k < n && !x->failed;) {
        if (!loop && mm_item(x, it[k])) {
            x->pair_mm = 1;
            f(x, it[k]);
            x->pair_mm = 0;
            tile_ctx(x, 0);
            k++;
            continue;
        }
        int e = k + 1;
        while (e < n && (loop || !mm_item(x, it[e]))) e++;
        LLVMValueRef nt = sel(x, LLVMBuildICmp(x->b, LLVMIntSLT, x->pt_base[1], x->a_n, ""), ci64(x, 2), ci64(x, 1));
        cgloop L;
        loop_open(x, &L, ci64(x, 0), nt, 0, NULL);
        x->a_tws = gep(x, x->T, x->a_ws, LLVMBuildNSWMul(x->b, L.iv, ci64(x, x->tile_ws / x->esz), ""));
        x->tbase = LLVMBuildNSWAdd(x->b, x->pt_base[0], LLVMBuildNSWMul(x->b, L.iv, ci64(x, x->V), ""), "");
        tile_mask(x);
        for (int j = k; j < e && !x->failed; j++) f(x, it[j]);
        loop_close(x, &L, NULL, 1);
        tile_ctx(x, 0);
        k = e;
    }
}

static void item_tile(cgx *x, int i) {
    if (i < 0) {   /* after the last node: the outputs */
        for (int k = 0; k < x->p->nouts && !x->failed; k++) store_out(x, k);
        return;
    }
    if (t_ops[x->p->nodes[i].op].flags & TF_RED) red_accumulate(x, i);
    else tile_node(x, i);
}
static void item_prologue(cgx *x, int i) {
    if (t_ops[x->p->nodes[i].op].flags & TF_RED) red_zero(x, i);
    else unbatched_node(x, i);
}
static void item_epilogue(cgx *x, int i) {
    if (t_ops[x->p->nodes[i].op].flags & TF_RED) red_finish(x, i);
    else unbatched_node(x, i);
}

/* Emit the items of a section (the prologue, the tile loop's body, the epilogue) into the
 * current function, or with segments as the calls of the segments plan_segments cuts,
 * each built and closed (close_segment) in turn. */
static void emit_section(cgx *x, cg_module *m, const char *name, int *nseg, LLVMValueRef main_fn, LLVMValueRef *args,
                         const int *it, int n, item_fn f) {
    if (x->seg_nodes <= 0 || n == 0) {
        for (int k = 0; k < n && !x->failed; k++) f(x, it[k]);
        return;
    }
    int *ends = xmalloc(sizeof(int) * (size_t)n);
    int ng = plan_segments(x, it, n, ends);
    x->ncalls = 0;
    for (int g = 0, s = 0; g < ng && !x->failed; s = ends[g++]) {
        open_segment(x, m, name, nseg, it[s]);
        if (x->in_tiles && x->pairs) emit_pair(x, it + s, ends[g] - s, f);
        else for (int k = s; k < ends[g] && !x->failed; k++) f(x, it[k]);
        if (x->failed) break;
        LLVMBuildRetVoid(x->b);
        close_segment(x, main_fn, args);
    }
    free(ends);
    if (x->failed || x->ncalls == 0) return;
    /* the calls, from a table of (function, offset table) pairs: the program's function
     * stays one small loop however many segments there are, so it compiles in constant time */
    int nc = x->ncalls / 2;
    LLVMTypeRef pair = LLVMStructTypeInContext(x->C, (LLVMTypeRef[]){ x->ptr, x->ptr }, 2, 0);
    LLVMValueRef *ent = xmalloc(sizeof(LLVMValueRef) * (size_t)nc);
    for (int k = 0; k < nc; k++) ent[k] = LLVMConstNamedStruct(pair, x->calls + 2 * k, 2);
    LLVMValueRef tab = const_array(x->M, pair, ent, (uint64_t)nc, "segcalls", 0);
    free(ent);
    LLVMValueRef a[10];
    memcpy(a, args, 9 * sizeof *a);
    LLVMTypeRef fty = kernel_fty(x, 1);
    cgloop L;
    LLVMValueRef fp = x->calls[0];
    a[9] = x->calls[1];
    if (nc > 1) {
        loop_open(x, &L, ci64(x, 0), ci64(x, nc), 0, NULL);
        LLVMValueRef e = LLVMBuildInBoundsGEP2(x->b, pair, tab, &L.iv, 1, "");
        fp = load(x, x->ptr, e, 8);
        a[9] = load(x, x->ptr, LLVMBuildStructGEP2(x->b, pair, e, 1, ""), 8);
    }
    LLVMBuildCall2(x->b, fty, fp, a, 10, "");
    if (nc > 1) loop_close(x, &L, NULL, 1);
}

/* The code run once per call, before the tile loop (epilogue 0: the prologue's unbatched
 * nodes, reduction accumulators zeroed) or after it (1: the reductions finished, the nodes
 * that depend on them), called with `once`'s arguments. */
static void once_section(cgx *x, cg_module *m, const char *name, int *nseg, LLVMValueRef main_fn, LLVMValueRef *once,
                         int epilogue) {
    const tprog *p = x->p;
    int *it = xmalloc(sizeof(int) * (size_t)(p->nn > 0 ? p->nn : 1)), n = 0;
    for (int i = 0; i < p->nn; i++) {
        if (!x->live[i]) continue;
        if (epilogue ? p->nodes[i].rows == 0 || x->sec[i] != SEC_EPILOGUE : !prologue_code(x, i)) continue;
        it[n++] = i;
    }
    emit_section(x, m, name, nseg, main_fn, once, it, n, epilogue ? item_epilogue : item_prologue);
    free(it);
}

/* Tile pairs (docs/codegen.md, "Tile pairs") for this program? With segments and vectors:
 * cg_options.tile_pairs 1 for every program, 0 (default) for those with gradient outputs,
 * whose compile time is not on the path of nfc_compile_*, -1 for none. Each accumulator
 * still gets the tiles in order, and every value the same operations, so the results are
 * the same bits either way. */
static int use_pairs(cgx *x) {
    if (x->seg_nodes <= 0 || x->V <= 1 || x->o->tile_pairs < 0) return 0;
    return x->o->tile_pairs > 0 || x->p->ngrad > 0;
}

static int64_t emit_prog(cgx *x, cg_module *m, const char *name) {
    const tprog *p = x->p;
    int nn = p->nn;
    /* liveness: what the outputs need */
    for (int k = 0; k < p->nouts; k++) x->live[p->outs[k]] = 1;
    for (int k = 0; k < p->ngrad; k++) x->live[p->gval[k]] = 1;
    for (int i = nn - 1; i >= 0; i--)
        if (x->live[i])
            for (int k = 0; k < p->nodes[i].nin; k++) x->live[p->nodes[i].in[k]] = 1;
    for (int e = 0; e < nn; e++) {
        if (!x->live[e] || p->nodes[e].op != T_LOOP_END) continue;
        for (int j = e + 1; j < nn; j++)
            for (int k = 0; x->live[j] && k < p->nodes[j].nin; k++)
                if (p->nodes[j].in[k] == p->nodes[e].in[1]) x->sep[e] = 1;
    }
    /* sections (tir.h): a batched node cannot use a value that needs the whole batch, and a
     * loop stays within one section and contains no reduction */
    tir_sections(p, x->sec);
    int lb = -1;
    for (int i = 0; i < nn; i++) {
        const tnode *nd = &p->nodes[i];
        if (nd->op == T_LOOP_BEGIN) lb = i;
        if (!x->live[i]) { if (nd->op == T_LOOP_END) lb = -1; continue; }
        for (int k = 0; k < nd->nin; k++)
            if (nd->rows == 0 && x->sec[nd->in[k]] == SEC_EPILOGUE) {
                cg_fail(x, "%s: %%%d %s: a batched value cannot use %%%d, which depends on a sum over the batch", p->name, i,
                        t_ops[nd->op].name, nd->in[k]);
                return -1;
            }
        if (lb >= 0 && (t_ops[nd->op].flags & TF_RED)) {
            cg_fail(x, "%s: %%%d %s: a sum over the batch inside the loop at %%%d is not supported", p->name, i,
                    t_ops[nd->op].name, lb);
            return -1;
        }
        if (lb >= 0 && p->nodes[lb].rows != 0 && nd->rows != 0 && x->sec[i] != x->sec[lb]) {
            cg_fail(x, "%s: %%%d: the loop at %%%d mixes values before and after sums over the batch", p->name, i, lb);
            return -1;
        }
        if (nd->op == T_LOOP_END) lb = -1;
    }

    if (plan_fusion(x)) return -1;
    x->fmm = -1;
    plan_direct_grads(x);

    /* workspace: the persistent part first (unbatched values, computed once per call and
     * read by every tile; LU diagonals; reduction accumulators), then the tile part, the
     * batched values, whose slots are reused once a value is dead (plan_tile_slots) */
    int64_t off = 0, tn_need = 0;
    for (int i = 0; i < nn; i++) {
        const tnode *nd = &p->nodes[i];
        x->slot[i] = x->aux[i] = -1;
        if (!x->live[i] || x->virt[i]) continue;
        if (nd->rows == 0) {
            if (nd->op == T_LU_FWD || nd->op == T_LU_INV || nd->op == T_LU_U || nd->op == T_LU_UT || nd->op == T_LU_INVT) {
                x->aux[i] = off;
                off += round64((int64_t)nd->w * x->esz);
            }
            continue;
        }
        if (nd->op == T_LOOP_END && !x->sep[i]) { x->slot[i] = x->slot[nd->in[1]]; continue; }
        if (nd->op == T_PARAM || nd->op == T_CONST || nd->op == T_CONSTTENSOR) continue;
        if (x->dgrad[i] < 0) {
            x->slot[i] = off;
            off += round64((int64_t)nd->rows * nd->w * x->esz);
        }
        if (t_ops[nd->op].flags & TF_RED) {   /* accumulators (red_acc_bytes) */
            x->aux[i] = off;
            off += round64(red_acc_bytes(x, i));
            if (tn_blocked(x, i) && tn_scratch_bytes(x, i) > tn_need) tn_need = tn_scratch_bytes(x, i);
        }
    }
    x->tn_scratch = off;   /* one scratch for the program's MATMUL_TN nodes */
    off += round64(tn_need);
    int64_t persistent = off;
    off = plan_tile_slots(x, off);
    if (off < 0) return -1;
    x->tile_ws = round64(off - persistent);
    x->pairs = use_pairs(x);
    off = persistent + x->tile_ws * (x->pairs ? 2 : 1);

    /* the function */
    if (LLVMGetNamedFunction(x->M, name)) { cg_fail(x, "codegen: two programs named %s", name); return -1; }
    LLVMValueRef f = kernel_fn(x, m, name, 0);
    LLVMPositionBuilderAtEnd(x->b, LLVMAppendBasicBlockInContext(x->C, f, "entry"));

    /* entry: user pointers and the constant tensors */
    load_io(x);
    x->gradp = p->ngrad ? load(x, x->ptr, gep(x, x->ptr, x->a_outs, ci64(x, p->nouts)), 8) : NULL;
    for (int i = 0; i < nn; i++) {
        const tnode *nd = &p->nodes[i];
        (void)nd;
        x->ubase[i] = NULL;   /* constant tensors: created at their first use (ubase) */
    }

    /* prologue, tile loop and epilogue are cut into segments of about seg_nodes nodes, each
     * a function of its own that the program's function calls in order (per tile in the tile
     * loop, with the tile's first row; once with 0 before and after it). Segments never cut
     * a tensor-IR loop; values pass through the workspace anyway. LLVM's code generation
     * (loop strength reduction above all) grows faster than linearly with a function's size,
     * and with a segment_sink each segment is compiled and freed before the next is built. */
    LLVMValueRef main_fn = x->fn, margs[9], once[9];
    for (unsigned k = 0; k < 8; k++) margs[k] = once[k] = LLVMGetParam(main_fn, k);
    once[8] = ci64(x, 0);
    int nseg = 0;

    /* prologue: unbatched values, once per call; reduction accumulators to 0 */
    once_section(x, m, name, &nseg, main_fn, once, 0);

    /* tiles of V rows; the outputs are stored by the program's function */
    cgloop Lt;
    loop_open(x, &Lt, ci64(x, 0), x->a_n, 0, NULL);
    x->tbase = Lt.iv;
    tile_mask(x);
    margs[8] = Lt.iv;
    x->in_tiles = 1;
    int *it = xmalloc(sizeof(int) * (size_t)(nn + 1)), nit = 0;
    for (int i = 0; i < nn; i++) {
        if (!x->live[i]) continue;
        if (!(t_ops[p->nodes[i].op].flags & TF_RED) && p->nodes[i].rows != 0) continue;   /* unbatched: prologue or epilogue */
        it[nit++] = i;
    }
    it[nit++] = -1;   /* the outputs */
    emit_section(x, m, name, &nseg, main_fn, margs, it, nit, item_tile);
    free(it);
    x->in_tiles = 0;
    loop_close(x, &Lt, NULL, (int64_t)x->V * (x->pairs ? 2 : 1));

    /* epilogue: the sums over the batch, what depends on them; then the gradient outputs */
    once_section(x, m, name, &nseg, main_fn, once, 1);
    if (p->ngrad && !x->failed) write_grads(x);
    LLVMBuildRetVoid(x->b);
    return x->failed ? -1 : off;
}

/* ---------------------------------------------------------------- public API */

void cg_default_options(cg_options *o) {
    memset(o, 0, sizeof *o);
    o->dtype = DT_F32;
    o->vector_width = 0;
    o->opt_level = 2;
    o->use_sleef = 1;
}

static void segtab_free(cgx *x) {
    for (int k = 0; k < x->npend; k++) LLVMDisposeModule(x->pend[k]);
    x->npend = 0;
    for (int k = 0; k < x->nsc; k++) { free(x->sc[k].txt); free(x->sc[k].name); }
    free(x->sc);
    free(x->so);
    free(x->calls);
    x->calls = NULL;
    x->ncalls = x->cap_calls = 0;
    x->sc = NULL;
    x->so = NULL;
    x->nsc = x->cap_sc = x->nso = x->cap_so = 0;
}

void cg_free(cg_module *m) {
    if (!m) return;
    if (m->mod) LLVMDisposeModule(m->mod);
    if (m->tm) LLVMDisposeTargetMachine(m->tm);
    if (m->tsc) LLVMOrcDisposeThreadSafeContext(m->tsc);
    for (int i = 0; i < m->nprogs && m->names; i++) free(m->names[i]);
    free(m->names);
    free(m->ws);
    free(m->nfused);
    free(m->tile_ws);
    free(m->triple);
    free(m->cpu);
    free(m->features);
    free(m);
}

void cg_release_llvm(cg_module *m, void **tsc, void **mod) {
    *tsc = m->tsc;
    *mod = m->mod;
    m->tsc = NULL;
    m->mod = NULL;
    cg_free(m);
}

void cg_llvm_handles(cg_module *m, void **ctx, void **mod) {
    *ctx = m->ctx;
    *mod = m->mod;
}
void *cg_target_machine(cg_module *m) { return m->tm; }

int64_t cg_workspace_bytes(const cg_module *m, int i) { return m && i >= 0 && i < m->nprogs ? m->ws[i] : -1; }
int64_t cg_tile_workspace_bytes(const cg_module *m, int i) { return m && i >= 0 && i < m->nprogs ? m->tile_ws[i] : -1; }
int cg_fused_count(const cg_module *m, int i) { return m && i >= 0 && i < m->nprogs ? m->nfused[i] : -1; }
int cg_vector_width(const cg_module *m) { return m->V; }
int cg_segment_count(const cg_module *m, int *shared) {
    if (shared) *shared = m->nshared;
    return m->nsegs;
}
const char *cg_triple(const cg_module *m) { return m->triple; }
const char *cg_cpu(const cg_module *m) { return m->cpu; }
const char *cg_features(const cg_module *m) { return m->features; }
const char *cg_function_name(const cg_module *m, int i) { return m && i >= 0 && i < m->nprogs ? m->names[i] : NULL; }

/* arch component of a triple, e.g. "x86_64" */
static size_t arch_len(const char *t) {
    const char *d = strchr(t, '-');
    return d ? (size_t)(d - t) : strlen(t);
}

static int check_prog(const tprog *p, const ir_graph *g, char *err, size_t errlen) {
    if (tir_verify(p, err, errlen)) return -1;
    if (p->nargs > TPROG_MAX_IO || p->nouts > TPROG_MAX_IO) {
        snprintf(err, errlen, "%s: too many inputs or outputs", p->name);
        return -1;
    }
    if (p->nouts < 1 && p->ngrad < 1) {
        snprintf(err, errlen, "%s: program has no outputs", p->name);
        return -1;
    }
    if (p->ngrad > 0) {
        if (p->nouts >= TPROG_MAX_IO) {
            snprintf(err, errlen, "%s: no room for the gradient output after %d outputs", p->name, p->nouts);
            return -1;
        }
        if (!g || p->param_total != tir_param_offsets(g, NULL)) {
            snprintf(err, errlen, "%s: the gradient array has %lld elements, the graph's parameters %lld", p->name,
                     (long long)p->param_total, g ? (long long)tir_param_offsets(g, NULL) : 0LL);
            return -1;
        }
        for (int k = 0; k < p->ngrad; k++) {
            int q = p->gparam[k];
            const tnode *v = &p->nodes[p->gval[k]];
            if (q < 0 || q >= g->np || (int64_t)v->rows * v->w != ir_param_numel(&g->params[q])) {
                snprintf(err, errlen, "%s: gradient output %d (%%%d, [%d x %d]) does not match parameter %d", p->name, k,
                         p->gval[k], v->rows, v->w, q);
                return -1;
            }
        }
    }
    for (int i = 0; i < p->nn; i++) {
        const tnode *n = &p->nodes[i];
        if (n->op == T_PARAM) {
            int k = n->iattr[0];
            if (!g || k < 0 || k >= g->np) {
                snprintf(err, errlen, "%s: %%%d: parameter %d does not exist in the graph", p->name, i, k);
                return -1;
            }
            if ((int64_t)n->rows * n->w != ir_param_numel(&g->params[k])) {
                snprintf(err, errlen, "%s: %%%d: parameter %d has %lld elements, the node [%d x %d]", p->name, i, k,
                         (long long)ir_param_numel(&g->params[k]), n->rows, n->w);
                return -1;
            }
        }
        if (n->op == T_SCALAR && (n->iattr[0] < 0 || n->iattr[0] >= p->nscalars)) {
            snprintf(err, errlen, "%s: %%%d: bad scalar index %d", p->name, i, n->iattr[0]);
            return -1;
        }
        if (n->op == T_CONSTTENSOR && (n->aux < 0 || n->naux != n->rows * n->w || n->aux + n->naux > p->nconsts)) {
            snprintf(err, errlen, "%s: %%%d: bad constant tensor", p->name, i);
            return -1;
        }
    }
    return 0;
}

#define BFAIL(...) do { snprintf(err, errlen, __VA_ARGS__); goto fail; } while (0)

int cg_build(const tprog *const *progs, int nprogs, const ir_graph *g, const char *prefix,
             const cg_options *opts, cg_module **out, char *err, size_t errlen) {
    cg_options defaults;
    const cg_options *o = opts;
    if (!o) { cg_default_options(&defaults); o = &defaults; }
    *out = NULL;
    if (nprogs < 1 || !progs) { snprintf(err, errlen, "codegen: no programs"); return -1; }
    if (o->dtype != DT_F32 && o->dtype != DT_F64) { snprintf(err, errlen, "codegen: bad dtype %d", o->dtype); return -1; }
    int vw = o->vector_width;
    if (vw != 0 && vw != 1 && vw != 2 && vw != 4 && vw != 8 && vw != 16) {
        snprintf(err, errlen, "codegen: vector width %d (expected 0, 1, 2, 4, 8 or 16)", vw);
        return -1;
    }
    if (o->opt_level < 0 || o->opt_level > 3) { snprintf(err, errlen, "codegen: optimization level %d (expected 0..3)", o->opt_level); return -1; }
    for (int i = 0; i < nprogs; i++)
        if (check_prog(progs[i], g, err, errlen)) return -1;
    cg_llvm_init();

    cg_module *m = calloc(1, sizeof *m);
    cgx x;
    memset(&x, 0, sizeof x);
    int64_t *poff = NULL;
    LLVMPassBuilderOptionsRef pbo = NULL;
    if (!m) { snprintf(err, errlen, "out of memory"); return -1; }
    m->dtype = o->dtype;

    /* target */
    char *host = LLVMGetDefaultTargetTriple();
    char *t = o->triple ? LLVMNormalizeTargetTriple(o->triple) : NULL;
    m->triple = xstrdup(t ? t : host);
    if (t) LLVMDisposeMessage(t);
    int same_arch = arch_len(m->triple) == arch_len(host) && !strncmp(m->triple, host, arch_len(host));
    LLVMDisposeMessage(host);
    if (o->cpu) {
        m->cpu = xstrdup(o->cpu);
    } else if (same_arch) {
        char *c = LLVMGetHostCPUName();
        m->cpu = xstrdup(c);
        LLVMDisposeMessage(c);
    } else {
        m->cpu = xstrdup("generic");
    }
    if (o->features) {
        m->features = xstrdup(o->features);
    } else if (!o->cpu && same_arch) {
        char *f = LLVMGetHostCPUFeatures();
        m->features = xstrdup(f);
        LLVMDisposeMessage(f);
    } else {
        m->features = xstrdup("");
    }
    if (!m->triple || !m->cpu || !m->features) BFAIL("out of memory");
    /* LLVM would only print a warning for an unknown x86 CPU name and carry on */
    if (o->cpu && triple_arch(m->triple) == ARCH_X86 && !in_list(x86_lvl0, o->cpu) && !in_list(x86_lvl1, o->cpu)
        && !in_list(x86_lvl2, o->cpu) && !in_list(x86_lvl3, o->cpu) && !in_list(x86_lvl4, o->cpu))
        BFAIL("codegen: unknown x86 CPU '%s' (LLVM 19 names, e.g. x86-64, x86-64-v3, skylake-avx512, znver4)", o->cpu);
    LLVMTargetRef target;
    char *msg = NULL;
    if (LLVMGetTargetFromTriple(m->triple, &target, &msg)) {
        snprintf(err, errlen, "codegen: target %s: %s", m->triple, msg ? msg : "unknown");
        LLVMDisposeMessage(msg);
        goto fail;
    }
    static const LLVMCodeGenOptLevel lv[4] = { LLVMCodeGenLevelNone, LLVMCodeGenLevelLess, LLVMCodeGenLevelDefault, LLVMCodeGenLevelAggressive };
    m->tm = LLVMCreateTargetMachine(target, m->triple, m->cpu, m->features, lv[o->opt_level], LLVMRelocPIC, LLVMCodeModelDefault);
    if (!m->tm) BFAIL("codegen: cannot create a target machine for %s (cpu %s)", m->triple, m->cpu);

    x.o = o;
    x.tgt.triple = m->triple;
    x.tgt.cpu = m->cpu;
    x.tgt.features = m->features;
    x.tgt.pipeline = opt_pipeline(o->opt_level);
    x.isa = isa_of(m->triple, m->cpu, m->features);
    x.esz = o->dtype == DT_F64 ? 8 : 4;
    x.f64mode = o->dtype == DT_F64;
    x.V = vw ? vw : native_bytes(&x.isa) / x.esz;
    if (x.V < 1) x.V = 1;
    x.valign = x.V * x.esz < 64 ? x.V * x.esz : 64;
    x.unroll = 4;
    x.seg_nodes = o->segment_nodes < 0 ? 0 : o->segment_nodes > 0 ? o->segment_nodes : CG_SEGMENT_NODES;
    m->V = x.V;

    /* module */
    m->tsc = LLVMOrcCreateNewThreadSafeContext();
    m->ctx = LLVMOrcThreadSafeContextGetContext(m->tsc);
    m->mod = LLVMModuleCreateWithNameInContext(prefix && *prefix ? prefix : "nfc", m->ctx);
    LLVMSetTarget(m->mod, m->triple);
    LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(m->tm);
    LLVMSetModuleDataLayout(m->mod, dl);
    LLVMDisposeTargetData(dl);

    x.C = m->ctx;
    x.M = m->mod;
    x.b = LLVMCreateBuilderInContext(x.C);
    set_types(&x);
    x.mainC = x.C;
    x.mainB = x.b;
    x.err = err;
    x.errlen = errlen;

    if (g) {
        poff = calloc((size_t)(g->np > 0 ? g->np : 1), sizeof *poff);
        if (!poff) BFAIL("out of memory");
        tir_param_offsets(g, poff);
    }
    x.poff = poff;
    m->ws = calloc((size_t)nprogs, sizeof *m->ws);
    m->names = calloc((size_t)nprogs, sizeof *m->names);
    m->nfused = calloc((size_t)nprogs, sizeof *m->nfused);
    m->tile_ws = calloc((size_t)nprogs, sizeof *m->tile_ws);
    if (!m->ws || !m->names || !m->nfused || !m->tile_ws) BFAIL("out of memory");
    m->nprogs = nprogs;
    for (int i = 0; i < nprogs; i++) {
        const tprog *p = progs[i];
        size_t nl = (prefix ? strlen(prefix) : 0) + strlen(p->name) + 2;
        m->names[i] = malloc(nl);
        if (!m->names[i]) BFAIL("out of memory");
        if (prefix && *prefix) snprintf(m->names[i], nl, "%s_%s", prefix, p->name);
        else snprintf(m->names[i], nl, "%s", p->name);
        size_t nn = (size_t)(p->nn > 0 ? p->nn : 1);
        x.p = p;
        x.slot = calloc(nn, sizeof *x.slot);
        x.dgrad = calloc(nn, sizeof *x.dgrad);
        x.aux = calloc(nn, sizeof *x.aux);
        x.ubase = calloc(nn, sizeof *x.ubase);
        x.live = calloc(nn, 1);
        x.sep = calloc(nn, 1);
        x.sec = calloc(nn, 1);
        x.virt = calloc(nn, 1);
        x.rmm = calloc(nn, sizeof *x.rmm);
        x.segconst = calloc(nn, sizeof *x.segconst);
        x.sig = calloc(nn, sizeof *x.sig);
        x.mainM = x.M;
        int64_t ws = -1;
        if (x.slot && x.dgrad && x.aux && x.ubase && x.live && x.sep && x.sec && x.virt && x.rmm && x.segconst && x.sig)
            ws = emit_prog(&x, m, m->names[i]);
        else cg_fail(&x, "out of memory");
        free(x.slot); free(x.dgrad); free(x.aux); free(x.ubase); free(x.live); free(x.sep); free(x.sec); free(x.virt); free(x.rmm); free(x.segconst);
        free(x.sig);
        x.segconst = NULL;
        x.sig = NULL;
        if (x.ob) { LLVMDisposeBuilder(x.ob); x.ob = NULL; }
        x.reloc = 0;
        if (x.M != x.mainM) {   /* a failure inside a segment's own module: drop it */
            LLVMContextRef sc = NULL;
            LLVMDisposeModule(leave_segment_module(&x, &sc));
            if (sc) LLVMContextDispose(sc);
        }
        x.slot = x.aux = x.dgrad = NULL; x.ubase = NULL; x.live = x.sep = NULL; x.sec = x.virt = NULL; x.rmm = NULL;
        if (ws < 0) goto fail;
        m->ws[i] = ws;
        m->nfused[i] = x.nfused;
        m->tile_ws[i] = x.tile_ws * (x.pairs ? 2 : 1);
    }
    LLVMDisposeBuilder(x.b);
    x.b = NULL;
    if (link_pending(&x)) goto fail;

    if (LLVMVerifyModule(m->mod, LLVMReturnStatusAction, &msg)) {
        snprintf(err, errlen, "codegen: invalid LLVM IR: %s", msg ? msg : "");
        LLVMDisposeMessage(msg);
        goto fail;
    }
    LLVMDisposeMessage(msg);
    /* the optimizer: opt_pipeline */
    const char *pipeline = opt_pipeline(o->opt_level);
    pbo = LLVMCreatePassBuilderOptions();
    LLVMErrorRef e = LLVMRunPasses(m->mod, pipeline, m->tm, pbo);
    LLVMDisposePassBuilderOptions(pbo);
    if (e) { take_error(e, "codegen: optimizer", err, errlen); goto fail; }
    free(poff);
    m->nshared = x.nshared;
    m->nsegs = x.nsc;
    segtab_free(&x);
    *out = m;
    return 0;
fail:
    if (x.b) LLVMDisposeBuilder(x.b);
    segtab_free(&x);
    free(poff);
    cg_free(m);
    return -1;
}

int cg_emit_file(cg_module *m, const char *path, int kind, char *err, size_t errlen) {
    char *msg = NULL;
    if (!m || !m->mod) { snprintf(err, errlen, "emit: no module"); return -1; }
    if (kind == CG_EMIT_LLVM) {
        if (LLVMPrintModuleToFile(m->mod, path, &msg)) {
            snprintf(err, errlen, "emit %s: %s", path, msg ? msg : "cannot write");
            LLVMDisposeMessage(msg);
            return -1;
        }
        return 0;
    }
    if (kind != CG_EMIT_ASM && kind != CG_EMIT_OBJ) { snprintf(err, errlen, "emit: bad kind %d", kind); return -1; }
    /* code generation changes the IR (CodeGenPrepare): emit from a copy */
    LLVMModuleRef c = LLVMCloneModule(m->mod);
    int rc = 0;
    if (LLVMTargetMachineEmitToFile(m->tm, c, path, kind == CG_EMIT_ASM ? LLVMAssemblyFile : LLVMObjectFile, &msg)) {
        snprintf(err, errlen, "emit %s: %s", path, msg ? msg : "failed");
        rc = -1;
    }
    LLVMDisposeMessage(msg);
    LLVMDisposeModule(c);
    return rc;
}

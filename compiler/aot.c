/* compiler/aot.c: the exported C API of an ahead-of-time library (see aot.h).
 *
 * Input: a cg_module holding the kernels of the derive.h programs (PROG_* order) and an
 * aot_spec. Output: the module with the parameters as a global, the C-ABI wrappers, the
 * weight loader (bitcode of aot_rt.c for the target architecture, embedded in nfc by
 * aot_blobs.S) linked in, and everything but the wrappers made internal.
 */
#include "aot.h"

#include <inttypes.h>
#include <llvm-c/Analysis.h>
#include <llvm-c/BitReader.h>
#include <llvm-c/Core.h>
#include <llvm-c/Linker.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <stdlib.h>
#include <string.h>

#include "derive.h"

/* the bitcode of aot_rt.c, per architecture (aot_blobs.S) */
extern const char nfc_aot_rt_x86_64[], nfc_aot_rt_x86_64_end[];
extern const char nfc_aot_rt_aarch64[], nfc_aot_rt_aarch64_end[];

typedef struct {
    LLVMContextRef C;
    LLVMModuleRef  M;
    LLVMBuilderRef b;
    LLVMTypeRef    i32, i64, ptr, f64, T;
    const aot_spec *s;
    cg_module     *cm;
    LLVMValueRef   params, loaded;   /* globals (loaded: NULL when embedded) */
} ax;

static LLVMValueRef c32(ax *a, int v) { return LLVMConstInt(a->i32, (unsigned long long)(long long)v, 1); }
static LLVMValueRef c64(ax *a, int64_t v) { return LLVMConstInt(a->i64, (unsigned long long)v, 1); }

static void fn_attrs(ax *a, LLVMValueRef f) {
    unsigned k = LLVMGetEnumAttributeKindForName("nounwind", 8);
    LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(a->C, k, 0));
    const char *cpu = cg_cpu(a->cm), *feat = cg_features(a->cm);
    LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex, LLVMCreateStringAttribute(a->C, "target-cpu", 10, cpu, (unsigned)strlen(cpu)));
    LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex,
                            LLVMCreateStringAttribute(a->C, "target-features", 15, feat, (unsigned)strlen(feat)));
}

static LLVMValueRef new_fn(ax *a, const char *name, LLVMTypeRef ret, LLVMTypeRef *pt, int np, const char *const *pn) {
    LLVMTypeRef fty = LLVMFunctionType(ret, pt, (unsigned)np, 0);
    LLVMValueRef f = LLVMAddFunction(a->M, name, fty);
    for (int k = 0; k < np; k++) LLVMSetValueName2(LLVMGetParam(f, (unsigned)k), pn[k], strlen(pn[k]));
    fn_attrs(a, f);
    LLVMPositionBuilderAtEnd(a->b, LLVMAppendBasicBlockInContext(a->C, f, "entry"));
    return f;
}

/* if (cond) return code; */
static void ret_if(ax *a, LLVMValueRef f, LLVMValueRef cond, int code) {
    LLVMBasicBlockRef bad = LLVMAppendBasicBlockInContext(a->C, f, "ret");
    LLVMBasicBlockRef ok = LLVMAppendBasicBlockInContext(a->C, f, "ok");
    LLVMBuildCondBr(a->b, cond, bad, ok);
    LLVMPositionBuilderAtEnd(a->b, bad);
    LLVMBuildRet(a->b, c32(a, code));
    LLVMPositionBuilderAtEnd(a->b, ok);
}

static LLVMValueRef is_null(ax *a, LLVMValueRef p) { return LLVMBuildIsNull(a->b, p, ""); }
static LLVMValueRef or_(ax *a, LLVMValueRef x, LLVMValueRef y) { return LLVMBuildOr(a->b, x, y, ""); }

/* A wrapper around kernel k: params in order (n, [seed, temperature,] ins..., outs..., ws). */
static int wrapper(ax *a, int k, const char *what, int nin, int nout, int sample, char *err, size_t errlen) {
    char name[256];
    snprintf(name, sizeof name, "%s_%s", a->s->prefix, what);
    const char *kname = cg_function_name(a->cm, k);
    LLVMValueRef kf = kname ? LLVMGetNamedFunction(a->M, kname) : NULL;
    if (!kf) { snprintf(err, errlen, "aot: no kernel for %s", what); return -1; }
    LLVMTypeRef pt[12];
    const char *pn[12];
    int np = 0;
    pt[np] = a->i64; pn[np++] = "n";
    if (sample) {
        pt[np] = a->i64; pn[np++] = "seed";
        pt[np] = a->f64; pn[np++] = "temperature";
    }
    static const char *const in_names[2][2] = { { "x", "ctx" }, { "ctx", "" } };
    static const char *const out_names[3][2] = { { "lp", "" }, { "z", "logdet" }, { "x", "lp" } };
    int first_in = np;
    for (int i = 0; i < nin; i++) { pt[np] = a->ptr; pn[np++] = in_names[sample][i]; }
    int first_out = np;
    int on = sample ? 2 : nout == 1 ? 0 : 1;
    for (int i = 0; i < nout; i++) {
        pt[np] = a->ptr;
        pn[np++] = (k == PROG_INVERSE && i == 0) ? "x" : out_names[on][i];
    }
    if (k == PROG_INVERSE) pn[first_in] = "z";
    pt[np] = a->ptr; pn[np++] = "ws";
    LLVMValueRef f = new_fn(a, name, a->i32, pt, np, pn);
    LLVMValueRef n = LLVMGetParam(f, 0), w = LLVMGetParam(f, (unsigned)np - 1);
    /* n < 0, a bad temperature: -1 */
    LLVMValueRef bad = LLVMBuildICmp(a->b, LLVMIntSLT, n, c64(a, 0), "");
    if (sample) {
        LLVMValueRef t = LLVMGetParam(f, 2);
        /* !(t >= 0) || t == inf (NaN fails the ordered compare) */
        bad = or_(a, bad, LLVMBuildFCmp(a->b, LLVMRealULT, t, LLVMConstReal(a->f64, 0), ""));
        bad = or_(a, bad, LLVMBuildFCmp(a->b, LLVMRealUEQ, t, LLVMConstReal(a->f64, __builtin_inf()), ""));
    }
    ret_if(a, f, bad, AOT_EINVAL);
    LLVMValueRef wsbad = or_(a, is_null(a, w),
                             LLVMBuildICmp(a->b, LLVMIntNE, LLVMBuildAnd(a->b, LLVMBuildPtrToInt(a->b, w, a->i64, ""), c64(a, 63), ""),
                                           c64(a, 0), ""));
    ret_if(a, f, wsbad, AOT_EWS);
    if (a->loaded) ret_if(a, f, LLVMBuildICmp(a->b, LLVMIntEQ, LLVMBuildLoad2(a->b, a->i32, a->loaded, ""), c32(a, 0), ""), AOT_ENOWEIGHTS);
    ret_if(a, f, LLVMBuildICmp(a->b, LLVMIntEQ, n, c64(a, 0), ""), AOT_OK);
    LLVMValueRef anynull = LLVMConstInt(LLVMInt1TypeInContext(a->C), 0, 0);
    for (int i = first_in; i < np - 1; i++) anynull = or_(a, anynull, is_null(a, LLVMGetParam(f, (unsigned)i)));
    ret_if(a, f, anynull, AOT_EINVAL);
    LLVMTypeRef at = LLVMArrayType2(a->ptr, 4);
    LLVMValueRef args = LLVMBuildAlloca(a->b, at, "args"), outs = LLVMBuildAlloca(a->b, at, "outs");
    LLVMValueRef sc = LLVMBuildAlloca(a->b, a->f64, "scalars");
    for (int i = 0; i < nin; i++) {
        LLVMValueRef idx = c64(a, i);
        LLVMBuildStore(a->b, LLVMGetParam(f, (unsigned)(first_in + i)), LLVMBuildGEP2(a->b, a->ptr, args, &idx, 1, ""));
    }
    for (int i = 0; i < nout; i++) {
        LLVMValueRef idx = c64(a, i);
        LLVMBuildStore(a->b, LLVMGetParam(f, (unsigned)(first_out + i)), LLVMBuildGEP2(a->b, a->ptr, outs, &idx, 1, ""));
    }
    LLVMBuildStore(a->b, sample ? LLVMGetParam(f, 2) : LLVMConstReal(a->f64, 1.0), sc);
    LLVMValueRef cargs[8] = { n, c64(a, 0), sample ? LLVMGetParam(f, 1) : c64(a, 0), args, sc, outs, a->params, w };
    LLVMBuildCall2(a->b, LLVMGlobalGetValueType(kf), kf, cargs, 8, "");
    LLVMBuildRet(a->b, c32(a, AOT_OK));
    return 0;
}

static LLVMValueRef global_bytes(ax *a, const char *name, const void *bytes, size_t len, int constant) {
    LLVMValueRef init = bytes ? LLVMConstStringInContext2(a->C, bytes, len, 1)
                              : LLVMConstNull(LLVMArrayType2(LLVMInt8TypeInContext(a->C), len));
    LLVMValueRef g = LLVMAddGlobal(a->M, LLVMTypeOf(init), name);
    LLVMSetInitializer(g, init);
    LLVMSetLinkage(g, LLVMInternalLinkage);
    LLVMSetGlobalConstant(g, constant);
    LLVMSetAlignment(g, 64);
    return g;
}

static LLVMValueRef global_i64s(ax *a, const char *name, const int64_t *v, int n) {
    LLVMValueRef e[n > 0 ? n : 1];
    for (int i = 0; i < n; i++) e[i] = c64(a, v[i]);
    if (n == 0) e[0] = c64(a, 0);
    LLVMValueRef init = LLVMConstArray2(a->i64, e, (uint64_t)(n > 0 ? n : 1));
    LLVMValueRef g = LLVMAddGlobal(a->M, LLVMTypeOf(init), name);
    LLVMSetInitializer(g, init);
    LLVMSetLinkage(g, LLVMPrivateLinkage);
    LLVMSetGlobalConstant(g, 1);
    return g;
}

static LLVMValueRef cstring(ax *a, const char *name, const char *s) {
    LLVMValueRef init = LLVMConstStringInContext2(a->C, s, strlen(s), 0);
    LLVMValueRef g = LLVMAddGlobal(a->M, LLVMTypeOf(init), name);
    LLVMSetInitializer(g, init);
    LLVMSetLinkage(g, LLVMPrivateLinkage);
    LLVMSetGlobalConstant(g, 1);
    LLVMSetUnnamedAddress(g, LLVMGlobalUnnamedAddr);
    return g;
}

static int link_loader(ax *a, char *err, size_t errlen) {
    const char *t = cg_triple(a->cm);
    const char *b = NULL, *e = NULL;
    if (!strncmp(t, "x86_64-", 7)) { b = nfc_aot_rt_x86_64; e = nfc_aot_rt_x86_64_end; }
    else if (!strncmp(t, "aarch64-", 8)) { b = nfc_aot_rt_aarch64; e = nfc_aot_rt_aarch64_end; }
    if (!b) {
        snprintf(err, errlen, "aot: loading weights at run time is supported on x86_64 and aarch64, not %s; embed them with --weights", t);
        return -1;
    }
    LLVMMemoryBufferRef mb = LLVMCreateMemoryBufferWithMemoryRange(b, (size_t)(e - b), "aot_rt.bc", 0);
    LLVMModuleRef rt = NULL;
    if (LLVMParseBitcodeInContext2(a->C, mb, &rt)) {
        LLVMDisposeMemoryBuffer(mb);
        snprintf(err, errlen, "aot: the embedded weight-loader bitcode is unreadable");
        return -1;
    }
    LLVMDisposeMemoryBuffer(mb);
    LLVMSetTarget(rt, LLVMGetTarget(a->M));
    LLVMSetDataLayout(rt, LLVMGetDataLayoutStr(a->M));
    if (LLVMLinkModules2(a->M, rt)) {   /* takes rt */
        snprintf(err, errlen, "aot: linking the weight loader failed");
        return -1;
    }
    return 0;
}

/* void-free call of an external support function by name */
static LLVMValueRef call_rt(ax *a, const char *name, LLVMValueRef *args, int n) {
    LLVMValueRef f = LLVMGetNamedFunction(a->M, name);
    return LLVMBuildCall2(a->b, LLVMGlobalGetValueType(f), f, args, (unsigned)n, "rc");
}

static int loader_wrappers(ax *a, char *err, size_t errlen) {
    const aot_spec *s = a->s;
    if (link_loader(a, err, errlen)) return -1;
    /* the model's table */
    LLVMValueRef names[s->np > 0 ? s->np : 1];
    for (int i = 0; i < s->np; i++) {
        char gname[64];
        snprintf(gname, sizeof gname, "nfc.pname.%d", i);
        names[i] = cstring(a, gname, s->pnames[i]);
    }
    if (s->np == 0) names[0] = LLVMConstNull(a->ptr);
    LLVMValueRef ninit = LLVMConstArray2(a->ptr, names, (uint64_t)(s->np > 0 ? s->np : 1));
    LLVMValueRef gnames = LLVMAddGlobal(a->M, LLVMTypeOf(ninit), "nfc.pnames");
    LLVMSetInitializer(gnames, ninit);
    LLVMSetLinkage(gnames, LLVMPrivateLinkage);
    LLVMSetGlobalConstant(gnames, 1);
    LLVMValueRef gshape = global_i64s(a, "nfc.pshape", s->pshape, 2 * s->np);
    LLVMValueRef goff = global_i64s(a, "nfc.poff", s->poff, s->np);
    char hash[32];
    snprintf(hash, sizeof hash, "%016" PRIx64, s->hash);
    LLVMValueRef ghash = cstring(a, "nfc.hash", hash);
    LLVMValueRef f64 = c32(a, s->dtype == DT_F64);

    char name[256];
    for (int file = 0; file < 2; file++) {
        snprintf(name, sizeof name, "%s_load_weights%s", s->prefix, file ? "_file" : "");
        LLVMTypeRef pt[2] = { a->ptr, a->i64 };
        static const char *const pn[2][2] = { { "bytes", "len" }, { "path", "" } };
        LLVMValueRef f = new_fn(a, name, a->i32, pt, file ? 1 : 2, pn[file]);
        LLVMValueRef args[9];
        int k = 0;
        args[k++] = LLVMGetParam(f, 0);
        if (!file) args[k++] = LLVMGetParam(f, 1);
        args[k++] = c32(a, s->np);
        args[k++] = gnames;
        args[k++] = gshape;
        args[k++] = goff;
        args[k++] = f64;
        args[k++] = a->params;
        args[k++] = ghash;
        LLVMValueRef rc = call_rt(a, file ? "nfc_aot_load_file" : "nfc_aot_load", args, k);
        LLVMBasicBlockRef ok = LLVMAppendBasicBlockInContext(a->C, f, "ok"), out = LLVMAppendBasicBlockInContext(a->C, f, "out");
        LLVMBuildCondBr(a->b, LLVMBuildICmp(a->b, LLVMIntEQ, rc, c32(a, 0), ""), ok, out);
        LLVMPositionBuilderAtEnd(a->b, ok);
        LLVMBuildStore(a->b, c32(a, 1), a->loaded);
        LLVMBuildBr(a->b, out);
        LLVMPositionBuilderAtEnd(a->b, out);
        LLVMBuildRet(a->b, rc);
    }
    return 0;
}

int aot_finish(cg_module *cm, const aot_spec *s, char *err, size_t errlen) {
    void *ctx, *mod;
    cg_llvm_handles(cm, &ctx, &mod);
    ax a = { 0 };
    a.C = ctx;
    a.M = mod;
    a.s = s;
    a.cm = cm;
    a.i32 = LLVMInt32TypeInContext(a.C);
    a.i64 = LLVMInt64TypeInContext(a.C);
    a.f64 = LLVMDoubleTypeInContext(a.C);
    a.ptr = LLVMPointerTypeInContext(a.C, 0);
    a.T = s->dtype == DT_F64 ? a.f64 : LLVMFloatTypeInContext(a.C);
    a.b = LLVMCreateBuilderInContext(a.C);
    int rc = 0;
    size_t esz = s->dtype == DT_F64 ? 8 : 4;
    size_t bytes = (size_t)(s->ptotal > 0 ? s->ptotal : 1) * esz;
    if (s->params) {
        unsigned char *buf = calloc(1, bytes);
        if (!buf) { snprintf(err, errlen, "out of memory"); LLVMDisposeBuilder(a.b); return -1; }
        for (int64_t i = 0; i < s->ptotal; i++) {
            if (esz == 8) memcpy(buf + 8 * i, &s->params[i], 8);
            else { float f = (float)s->params[i]; memcpy(buf + 4 * i, &f, 4); }
        }
        a.params = global_bytes(&a, "nfc.params", buf, bytes, 1);
        free(buf);
    } else {
        a.params = global_bytes(&a, "nfc.params", NULL, bytes, 0);
        a.loaded = LLVMAddGlobal(a.M, a.i32, "nfc.loaded");
        LLVMSetInitializer(a.loaded, c32(&a, 0));
        LLVMSetLinkage(a.loaded, LLVMInternalLinkage);
    }
    int nin = s->C ? 2 : 1;
    if (wrapper(&a, PROG_LOG_PROB, "log_prob", nin, 1, 0, err, errlen) ||
        wrapper(&a, PROG_FORWARD, "forward", nin, 2, 0, err, errlen) ||
        wrapper(&a, PROG_INVERSE, "inverse", nin, 2, 0, err, errlen) ||
        wrapper(&a, PROG_SAMPLE, "sample", s->C ? 1 : 0, 2, 1, err, errlen))
        rc = -1;
    if (rc == 0) {
        char name[256];
        snprintf(name, sizeof name, "%s_workspace_size", s->prefix);
        new_fn(&a, name, a.i64, NULL, 0, NULL);
        int64_t ws = 0;
        for (int k = 0; k < PROG_COUNT; k++) {
            int64_t b = cg_workspace_bytes(cm, k);
            if (b > ws) ws = b;
        }
        LLVMBuildRet(a.b, c64(&a, (ws + 63) / 64 * 64 > 64 ? (ws + 63) / 64 * 64 : 64));
        snprintf(name, sizeof name, "%s_weights_loaded", s->prefix);
        new_fn(&a, name, a.i32, NULL, 0, NULL);
        LLVMBuildRet(a.b, a.loaded ? LLVMBuildLoad2(a.b, a.i32, a.loaded, "") : c32(&a, 1));
        if (!s->params) rc = loader_wrappers(&a, err, errlen);
    }
    LLVMDisposeBuilder(a.b);
    if (rc) return -1;
    /* everything but the API internal; the segments compiled to objects of their own (a
     * shared library's, nfc_aot_build) are declared here, and hidden */
    size_t pl = strlen(s->prefix);
    for (LLVMValueRef f = LLVMGetFirstFunction(a.M); f; f = LLVMGetNextFunction(f)) {
        size_t len;
        const char *nm = LLVMGetValueName2(f, &len);
        if (LLVMIsDeclaration(f)) {
            if (len > pl + 4 && !strncmp(nm, s->prefix, pl) && !strncmp(nm + pl, "__k_", 4)) LLVMSetVisibility(f, LLVMHiddenVisibility);
            continue;
        }
        int api = len > pl + 1 && !strncmp(nm, s->prefix, pl) && nm[pl] == '_' && strncmp(nm + pl, "__k_", 4);
        if (!api) LLVMSetLinkage(f, LLVMInternalLinkage);
        else LLVMSetVisibility(f, LLVMDefaultVisibility);
    }
    char *msg = NULL;
    if (LLVMVerifyModule(a.M, LLVMReturnStatusAction, &msg)) {
        snprintf(err, errlen, "aot: invalid LLVM IR: %s", msg ? msg : "");
        LLVMDisposeMessage(msg);
        return -1;
    }
    LLVMDisposeMessage(msg);
    /* tidy the wrappers (mem2reg, dead code) without optimizing the kernels again */
    LLVMPassBuilderOptionsRef pbo = LLVMCreatePassBuilderOptions();
    LLVMErrorRef e = LLVMRunPasses(a.M, "function(mem2reg,simplifycfg),globaldce", cg_target_machine(cm), pbo);
    LLVMDisposePassBuilderOptions(pbo);
    if (e) {
        char *m2 = LLVMGetErrorMessage(e);
        snprintf(err, errlen, "aot: optimizer: %s", m2 ? m2 : "");
        LLVMDisposeErrorMessage(m2);
        return -1;
    }
    return 0;
}

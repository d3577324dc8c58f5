/* compiler/jit.c: the in-process ORC LLJIT (see jit.h).
 *
 * Input: cg_module objects built for the host architecture. Output: function addresses.
 * Ownership: nfc_jit owns the LLJIT and one resource tracker per added module; jit_add
 * takes the module and its thread-safe context from the cg_module (cg_release_llvm) and
 * passes them to ORC. Session errors (e.g. a symbol that cannot be resolved while a
 * function is materialized) are caught by our error reporter instead of being printed,
 * and returned by the jit_lookup that triggered them.
 */
#include "jit.h"

#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/TargetMachine.h>
#include <stdlib.h>
#include <string.h>

struct nfc_jit {
    LLVMOrcLLJITRef            j;
    LLVMOrcResourceTrackerRef *rt;
    int                        nrt, cap_rt;
    char                       session_err[512];   /* last error reported by the session */
};

static void jit_error_msg(LLVMErrorRef e, const char *what, char *err, size_t errlen) {
    char *msg = LLVMGetErrorMessage(e);
    snprintf(err, errlen, "%s: %s", what, msg ? msg : "unknown LLVM error");
    LLVMDisposeErrorMessage(msg);
}

static void session_error(void *ctx, LLVMErrorRef e) {
    nfc_jit *j = ctx;
    char *msg = LLVMGetErrorMessage(e);
    snprintf(j->session_err, sizeof j->session_err, "%s", msg ? msg : "unknown JIT session error");
    LLVMDisposeErrorMessage(msg);
}

int jit_create(nfc_jit **out, char *err, size_t errlen) { return jit_create_opt(out, 2, err, errlen); }

int jit_create_opt(nfc_jit **out, int opt_level, char *err, size_t errlen) {
    *out = NULL;
    cg_llvm_init();
    nfc_jit *j = calloc(1, sizeof *j);
    if (!j) { snprintf(err, errlen, "out of memory"); return -1; }
    LLVMOrcJITTargetMachineBuilderRef jtmb;
    LLVMErrorRef e = NULL;
    if (opt_level == 0) {
        /* the host's target machine with the instruction selector and register allocator
         * of -O0 (FastISel, fast regalloc): compiling is several times faster */
        char *triple = LLVMGetDefaultTargetTriple(), *cpu = LLVMGetHostCPUName(), *features = LLVMGetHostCPUFeatures();
        LLVMTargetRef target = NULL;
        char *msg = NULL;
        LLVMTargetMachineRef tm = NULL;
        if (LLVMGetTargetFromTriple(triple, &target, &msg) == 0)
            tm = LLVMCreateTargetMachine(target, triple, cpu, features, LLVMCodeGenLevelNone, LLVMRelocPIC,
                                         LLVMCodeModelJITDefault);
        else
            snprintf(err, errlen, "jit: no target for %s: %s", triple, msg ? msg : "?");
        LLVMDisposeMessage(msg);
        LLVMDisposeMessage(triple);
        LLVMDisposeMessage(cpu);
        LLVMDisposeMessage(features);
        if (!tm) {
            if (target) snprintf(err, errlen, "jit: cannot create a target machine for the host");
            free(j);
            return -1;
        }
        jtmb = LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm);   /* takes tm */
    } else {
        e = LLVMOrcJITTargetMachineBuilderDetectHost(&jtmb);
        if (e) { jit_error_msg(e, "jit: detecting the host", err, errlen); free(j); return -1; }
    }
    LLVMOrcLLJITBuilderRef b = LLVMOrcCreateLLJITBuilder();
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(b, jtmb);   /* takes jtmb */
    e = LLVMOrcCreateLLJIT(&j->j, b);                          /* takes b */
    if (e) { jit_error_msg(e, "jit: creating the LLJIT", err, errlen); free(j); return -1; }
    LLVMOrcExecutionSessionSetErrorReporter(LLVMOrcLLJITGetExecutionSession(j->j), session_error, j);
    LLVMOrcDefinitionGeneratorRef gen;
    e = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(j->j), NULL, NULL);
    if (e) { jit_error_msg(e, "jit: process symbol generator", err, errlen); jit_free(j); return -1; }
    LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(j->j), gen);   /* takes gen */
    *out = j;
    return 0;
}

static size_t arch_len(const char *t) {
    const char *d = strchr(t, '-');
    return d ? (size_t)(d - t) : strlen(t);
}

int jit_add(nfc_jit *j, cg_module *m, char *err, size_t errlen) {
    if (!m) { snprintf(err, errlen, "jit: no module"); return -1; }
    char *host = LLVMGetDefaultTargetTriple();
    const char *t = cg_triple(m);
    int ok = arch_len(t) == arch_len(host) && !strncmp(t, host, arch_len(host));
    if (!ok) snprintf(err, errlen, "jit: module built for %s cannot run on this host (%s)", t, host);
    LLVMDisposeMessage(host);
    if (!ok) { cg_free(m); return -1; }
    if (j->nrt == j->cap_rt) {
        int nc = j->cap_rt ? 2 * j->cap_rt : 8;
        LLVMOrcResourceTrackerRef *r = realloc(j->rt, sizeof *r * (size_t)nc);
        if (!r) { snprintf(err, errlen, "out of memory"); cg_free(m); return -1; }
        j->rt = r;
        j->cap_rt = nc;
    }
    void *tsc, *mod;
    cg_release_llvm(m, &tsc, &mod);
    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule((LLVMModuleRef)mod, (LLVMOrcThreadSafeContextRef)tsc);
    LLVMOrcDisposeThreadSafeContext((LLVMOrcThreadSafeContextRef)tsc);   /* the TSM keeps it alive */
    LLVMOrcResourceTrackerRef rt = LLVMOrcJITDylibCreateResourceTracker(LLVMOrcLLJITGetMainJITDylib(j->j));
    LLVMErrorRef e = LLVMOrcLLJITAddLLVMIRModuleWithRT(j->j, rt, tsm);   /* takes tsm */
    if (e) {
        jit_error_msg(e, "jit: adding the module", err, errlen);
        LLVMOrcReleaseResourceTracker(rt);
        return -1;
    }
    j->rt[j->nrt++] = rt;
    return 0;
}

int jit_add_llvm(nfc_jit *j, void *tsc, void *mod, char *err, size_t errlen) {
    if (j->nrt == j->cap_rt) {
        int nc = j->cap_rt ? 2 * j->cap_rt : 8;
        LLVMOrcResourceTrackerRef *r = realloc(j->rt, sizeof *r * (size_t)nc);
        if (!r) { snprintf(err, errlen, "out of memory"); LLVMDisposeModule((LLVMModuleRef)mod); return -1; }
        j->rt = r;
        j->cap_rt = nc;
    }
    /* the module shares the context, whose reference stays with its cg_module */
    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule((LLVMModuleRef)mod, (LLVMOrcThreadSafeContextRef)tsc);
    LLVMOrcResourceTrackerRef rt = LLVMOrcJITDylibCreateResourceTracker(LLVMOrcLLJITGetMainJITDylib(j->j));
    LLVMErrorRef e = LLVMOrcLLJITAddLLVMIRModuleWithRT(j->j, rt, tsm);   /* takes tsm */
    if (e) {
        jit_error_msg(e, "jit: adding a module", err, errlen);
        LLVMOrcReleaseResourceTracker(rt);
        return -1;
    }
    j->rt[j->nrt++] = rt;
    return 0;
}

int jit_compile_now(void *ctx, void *tsc, void *mod, const char *fn, char *err, size_t errlen) {
    nfc_jit *j = ctx;
    if (jit_add_llvm(j, tsc, mod, err, errlen)) return -1;
    return jit_lookup(j, fn, err, errlen) ? 0 : -1;
}

void *jit_lookup(nfc_jit *j, const char *name, char *err, size_t errlen) {
    LLVMOrcExecutorAddress addr = 0;
    j->session_err[0] = 0;
    LLVMErrorRef e = LLVMOrcLLJITLookup(j->j, &addr, name);
    if (e) {
        char what[800];
        snprintf(what, sizeof what, "jit: %.200s%s%.500s", name, j->session_err[0] ? ": " : "", j->session_err);
        jit_error_msg(e, what, err, errlen);
        return NULL;
    }
    if (!addr) { snprintf(err, errlen, "jit: %s has address 0", name); return NULL; }
    return (void *)(uintptr_t)addr;
}

void jit_free(nfc_jit *j) {
    if (!j) return;
    for (int i = 0; i < j->nrt; i++) LLVMOrcReleaseResourceTracker(j->rt[i]);
    free(j->rt);
    if (j->j) {
        LLVMErrorRef e = LLVMOrcDisposeLLJIT(j->j);
        if (e) LLVMConsumeError(e);
    }
    free(j);
}

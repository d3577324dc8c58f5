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
#include <llvm-c/Analysis.h>
#include <llvm-c/Object.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* a segment's module waiting for, or compiled by, a worker (jit_compile_async) */
typedef struct {
    LLVMContextRef      C;
    LLVMModuleRef       M;
    LLVMMemoryBufferRef obj;         /* the object file, once compiled */
    char               *err;         /* malloc'ed message if compiling failed */
    char                name[200];
} segjob;

struct nfc_jit {
    LLVMOrcLLJITRef            j;
    LLVMOrcResourceTrackerRef *rt;
    int                        nrt, cap_rt;
    char                       session_err[512];   /* last error reported by the session */
    /* segments compiled on worker threads (jit_compile_async .. jit_segments_finish) */
    pthread_mutex_t            mu;
    pthread_cond_t             cv_job, cv_space;
    segjob                    *jobs;
    int                        njobs, cap_jobs, next_job, stop;
    pthread_t                 *th;
    int                        nth;
    char                      *triple, *cpu, *features, *pipeline;   /* of the current batch */
    int                        level;   /* the code generator's level: the same as the LLJIT's own
                                           (jit_create_opt: None at 0, else Default) */
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

/* an nfc_jit without its LLJIT yet, code generator level `level` (NULL: out of memory) */
static nfc_jit *new_jit(int level) {
    cg_llvm_init();
    nfc_jit *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv_job, NULL);
    pthread_cond_init(&j->cv_space, NULL);
    j->level = level;
    return j;
}

int jit_create_opt(nfc_jit **out, int opt_level, char *err, size_t errlen) {
    *out = NULL;
    nfc_jit *j = new_jit(opt_level == 0 ? 0 : 2);
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

static char *dupstr(const char *s) {
    size_t n = strlen(s ? s : "") + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s ? s : "", n);
    return d;
}

/* verify, optimize and compile one segment's module to an object file with the worker's own
 * target machine, then free the module and its context */
static void compile_job(nfc_jit *j, LLVMTargetMachineRef tm, segjob *jb) {
    char *msg = NULL, what[400];
    if (LLVMVerifyModule(jb->M, LLVMReturnStatusAction, &msg)) {
        snprintf(what, sizeof what, "codegen: invalid LLVM IR in %.200s: %.150s", jb->name, msg ? msg : "");
        jb->err = dupstr(what);
    } else if (!tm) {
        snprintf(what, sizeof what, "jit: cannot create a target machine for %.100s (cpu %.80s)", j->triple, j->cpu);
        jb->err = dupstr(what);
    } else {
        LLVMPassBuilderOptionsRef pbo = LLVMCreatePassBuilderOptions();
        LLVMErrorRef e = LLVMRunPasses(jb->M, j->pipeline, tm, pbo);
        LLVMDisposePassBuilderOptions(pbo);
        if (e) {
            char *em = LLVMGetErrorMessage(e);
            snprintf(what, sizeof what, "codegen: optimizer: %.300s", em ? em : "?");
            LLVMDisposeErrorMessage(em);
            jb->err = dupstr(what);
        } else {
            char *emsg = NULL;
            if (LLVMTargetMachineEmitToMemoryBuffer(tm, jb->M, LLVMObjectFile, &emsg, &jb->obj)) {
                snprintf(what, sizeof what, "codegen: %.200s: %.150s", jb->name, emsg ? emsg : "cannot emit");
                jb->err = dupstr(what);
                jb->obj = NULL;
            }
            LLVMDisposeMessage(emsg);
        }
    }
    LLVMDisposeMessage(msg);
    LLVMDisposeModule(jb->M);
    LLVMContextDispose(jb->C);
    jb->M = NULL;
    jb->C = NULL;
}

/* LLVM creates some of its global state (the timer groups of the pass managers and the
 * code generator, registries) on first use, through lazily initialized statics. That first
 * use is made once, by the thread that starts the first compiler threads, before they
 * exist: a tiny module optimized and compiled like a segment. */
static void warm_up(const char *triple, const char *cpu, const char *features, const char *pipeline, int level) {
    static const LLVMCodeGenOptLevel lv[4] = { LLVMCodeGenLevelNone, LLVMCodeGenLevelLess, LLVMCodeGenLevelDefault, LLVMCodeGenLevelAggressive };
    LLVMContextRef C = LLVMContextCreate();
    LLVMModuleRef M = LLVMModuleCreateWithNameInContext("nfc_warm_up", C);
    LLVMSetTarget(M, triple);
    LLVMTypeRef fty = LLVMFunctionType(LLVMVoidTypeInContext(C), NULL, 0, 0);
    LLVMValueRef f = LLVMAddFunction(M, "nfc_warm_up", fty);
    LLVMBuilderRef b = LLVMCreateBuilderInContext(C);
    LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(C, f, "entry"));
    LLVMBuildRetVoid(b);
    LLVMDisposeBuilder(b);
    LLVMTargetRef target = NULL;
    char *msg = NULL;
    if (!LLVMGetTargetFromTriple(triple, &target, &msg)) {
        LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, cpu, features, lv[level], LLVMRelocPIC, LLVMCodeModelDefault);
        if (tm) {
            LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
            LLVMSetModuleDataLayout(M, dl);
            LLVMDisposeTargetData(dl);
            LLVMPassBuilderOptionsRef pbo = LLVMCreatePassBuilderOptions();
            LLVMErrorRef e = LLVMRunPasses(M, pipeline, tm, pbo);
            if (e) LLVMConsumeError(e);
            LLVMDisposePassBuilderOptions(pbo);
            LLVMMemoryBufferRef obj = NULL;
            char *emsg = NULL;
            if (!LLVMTargetMachineEmitToMemoryBuffer(tm, M, LLVMObjectFile, &emsg, &obj)) LLVMDisposeMemoryBuffer(obj);
            LLVMDisposeMessage(emsg);
            LLVMDisposeTargetMachine(tm);
        }
    }
    LLVMDisposeMessage(msg);
    LLVMDisposeModule(M);
    LLVMContextDispose(C);
}

static void *seg_worker(void *arg) {
    nfc_jit *j = arg;
    static const LLVMCodeGenOptLevel lv[4] = { LLVMCodeGenLevelNone, LLVMCodeGenLevelLess, LLVMCodeGenLevelDefault, LLVMCodeGenLevelAggressive };
    LLVMTargetMachineRef tm = NULL;
    LLVMTargetRef target = NULL;
    char *msg = NULL;
    if (!LLVMGetTargetFromTriple(j->triple, &target, &msg))
        tm = LLVMCreateTargetMachine(target, j->triple, j->cpu, j->features, lv[j->level < 0 ? 0 : j->level > 3 ? 3 : j->level],
                                     LLVMRelocPIC, LLVMCodeModelDefault);
    LLVMDisposeMessage(msg);
    pthread_mutex_lock(&j->mu);
    for (;;) {
        while (!j->stop && j->next_job == j->njobs) pthread_cond_wait(&j->cv_job, &j->mu);
        if (j->next_job == j->njobs) break;   /* stop, and nothing left */
        int k = j->next_job++;
        segjob jb = j->jobs[k];   /* the array may move while we compile */
        pthread_cond_signal(&j->cv_space);
        pthread_mutex_unlock(&j->mu);
        compile_job(j, tm, &jb);
        pthread_mutex_lock(&j->mu);
        j->jobs[k] = jb;
    }
    pthread_mutex_unlock(&j->mu);
    if (tm) LLVMDisposeTargetMachine(tm);
    return NULL;
}

int jit_compile_async(void *ctx, const cg_target *t, void *context, void *module, const char *fn, char *err, size_t errlen) {
    nfc_jit *j = ctx;
    pthread_mutex_lock(&j->mu);
    if (!j->th) {   /* the first segment of a batch: its target, and the workers */
        free(j->triple); free(j->cpu); free(j->features); free(j->pipeline);
        j->triple = dupstr(t->triple);
        j->cpu = dupstr(t->cpu);
        j->features = dupstr(t->features);
        j->pipeline = dupstr(t->pipeline);
        static pthread_mutex_t warm_mu = PTHREAD_MUTEX_INITIALIZER;
        static int warmed;
        pthread_mutex_lock(&warm_mu);
        if (!warmed) warm_up(j->triple, j->cpu, j->features, j->pipeline, j->level);
        warmed = 1;
        pthread_mutex_unlock(&warm_mu);
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        int n = ncpu < 1 ? 1 : ncpu > 8 ? 8 : (int)ncpu;
        j->th = calloc((size_t)n, sizeof *j->th);
        j->stop = 0;
        j->nth = 0;
        if (j->th && j->triple && j->cpu && j->features && j->pipeline)
            for (int k = 0; k < n; k++)
                if (pthread_create(&j->th[j->nth], NULL, seg_worker, j) == 0) j->nth++;
        if (j->nth == 0) {
            pthread_mutex_unlock(&j->mu);
            snprintf(err, errlen, "jit: cannot start a compiler thread");
            LLVMDisposeModule((LLVMModuleRef)module);
            LLVMContextDispose((LLVMContextRef)context);
            return -1;
        }
    }
    if (j->njobs == j->cap_jobs) {
        int nc = j->cap_jobs ? 2 * j->cap_jobs : 64;
        segjob *nj = realloc(j->jobs, sizeof *nj * (size_t)nc);
        if (!nj) {
            pthread_mutex_unlock(&j->mu);
            snprintf(err, errlen, "out of memory");
            LLVMDisposeModule((LLVMModuleRef)module);
            LLVMContextDispose((LLVMContextRef)context);
            return -1;
        }
        j->jobs = nj;
        j->cap_jobs = nc;
    }
    /* at most one module waiting per thread: building IR is faster than compiling it, and
     * without a bound every segment's IR would wait in memory at once */
    while (j->njobs - j->next_job >= j->nth) pthread_cond_wait(&j->cv_space, &j->mu);
    segjob *jb = &j->jobs[j->njobs++];
    memset(jb, 0, sizeof *jb);
    jb->C = (LLVMContextRef)context;
    jb->M = (LLVMModuleRef)module;
    snprintf(jb->name, sizeof jb->name, "%s", fn);
    pthread_cond_signal(&j->cv_job);
    pthread_mutex_unlock(&j->mu);
    return 0;
}

/* Profiling (docs/codegen.md, "Profiling compiled code"): with NFC_PERF_MAP set, the
 * functions of the segment objects (name and size from the object's symbol table, address
 * once added) are appended to /tmp/perf-<pid>.map, where perf looks for JIT symbols. */
typedef struct { char name[200]; uint64_t size; } mapsym;

static int object_symbols(LLVMMemoryBufferRef obj, mapsym **out, int *n, int *cap) {
    char *msg = NULL;
    LLVMBinaryRef bin = LLVMCreateBinary(obj, NULL, &msg);
    if (!bin) { LLVMDisposeMessage(msg); return -1; }
    LLVMSymbolIteratorRef it = LLVMObjectFileCopySymbolIterator(bin);
    for (; it && !LLVMObjectFileIsSymbolIteratorAtEnd(bin, it); LLVMMoveToNextSymbol(it)) {
        const char *nm = LLVMGetSymbolName(it);
        uint64_t sz = LLVMGetSymbolSize(it);
        if (!nm || strncmp(nm, "nfc", 3) || sz == 0) continue;
        if (*n == *cap) {
            int nc = *cap ? 2 * *cap : 64;
            mapsym *ns = realloc(*out, sizeof *ns * (size_t)nc);
            if (!ns) break;
            *out = ns;
            *cap = nc;
        }
        snprintf((*out)[*n].name, sizeof (*out)[*n].name, "%s", nm);
        (*out)[(*n)++].size = sz;
    }
    if (it) LLVMDisposeSymbolIterator(it);
    LLVMDisposeBinary(bin);
    return 0;
}

static void write_perf_map(nfc_jit *j, const mapsym *s, int n) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/perf-%d.map", (int)getpid());
    FILE *f = fopen(path, "a");
    if (!f) return;
    for (int k = 0; k < n; k++) {
        LLVMOrcExecutorAddress a = 0;
        LLVMErrorRef e = LLVMOrcLLJITLookup(j->j, &a, s[k].name);
        if (e) { LLVMConsumeError(e); continue; }
        fprintf(f, "%llx %llx %s\n", (unsigned long long)a, (unsigned long long)s[k].size, s[k].name);
    }
    fclose(f);
}

/* waits for the compiler threads and stops them; 0, or -1 with the first job's error */
static int join_workers(nfc_jit *j, char *err, size_t errlen) {
    pthread_mutex_lock(&j->mu);
    j->stop = 1;
    pthread_cond_broadcast(&j->cv_job);
    pthread_mutex_unlock(&j->mu);
    for (int k = 0; k < j->nth; k++) pthread_join(j->th[k], NULL);
    free(j->th);
    j->th = NULL;
    j->nth = 0;
    int rc = 0;
    for (int k = 0; k < j->njobs && rc == 0; k++)
        if (j->jobs[k].err) {
            snprintf(err, errlen, "%s", j->jobs[k].err);
            rc = -1;
        }
    return rc;
}

/* frees what is left of the batch's jobs */
static void clear_jobs(nfc_jit *j) {
    for (int k = 0; k < j->njobs; k++) {
        segjob *jb = &j->jobs[k];
        if (jb->M) { LLVMDisposeModule(jb->M); jb->M = NULL; }   /* not reached: the workers take every job */
        if (jb->C) { LLVMContextDispose(jb->C); jb->C = NULL; }
        if (jb->obj) LLVMDisposeMemoryBuffer(jb->obj);
        jb->obj = NULL;
        free(jb->err);
        jb->err = NULL;
    }
    j->njobs = j->next_job = 0;
    j->stop = 0;
}

int jit_compiler_create(nfc_jit **out, int opt_level, char *err, size_t errlen) {
    *out = new_jit(opt_level < 0 ? 0 : opt_level > 3 ? 3 : opt_level);
    if (!*out) { snprintf(err, errlen, "out of memory"); return -1; }
    return 0;
}

int jit_compile_async_hidden(void *ctx, const cg_target *t, void *context, void *module, const char *fn, char *err,
                             size_t errlen) {
    LLVMValueRef f = LLVMGetNamedFunction((LLVMModuleRef)module, fn);
    if (f) LLVMSetVisibility(f, LLVMHiddenVisibility);
    return jit_compile_async(ctx, t, context, module, fn, err, errlen);
}

int jit_segments_write(nfc_jit *j, const char *stem, char ***paths, int *npaths, char *err, size_t errlen) {
    *paths = NULL;
    *npaths = 0;
    int rc = join_workers(j, err, errlen);
    char **pv = rc ? NULL : calloc((size_t)(j->njobs > 0 ? j->njobs : 1), sizeof *pv);
    if (!rc && !pv) { snprintf(err, errlen, "out of memory"); rc = -1; }
    for (int k = 0; k < j->njobs && rc == 0; k++) {
        segjob *jb = &j->jobs[k];
        size_t len = strlen(stem) + 32;
        pv[k] = malloc(len);
        if (!pv[k]) { snprintf(err, errlen, "out of memory"); rc = -1; break; }
        snprintf(pv[k], len, "%s.seg%d.o", stem, k);
        *npaths = k + 1;
        FILE *f = fopen(pv[k], "wb");
        size_t n = jb->obj ? LLVMGetBufferSize(jb->obj) : 0;
        int ok = f && jb->obj && fwrite(LLVMGetBufferStart(jb->obj), 1, n, f) == n;
        if (f && fclose(f)) ok = 0;
        if (!ok) { snprintf(err, errlen, "%s: cannot write the object file", pv[k]); rc = -1; }
    }
    clear_jobs(j);
    if (rc) {
        for (int k = 0; k < *npaths; k++) { remove(pv[k]); free(pv[k]); }
        free(pv);
        *npaths = 0;
        return -1;
    }
    *paths = pv;
    return 0;
}

int jit_segments_finish(nfc_jit *j, int keep, char *err, size_t errlen) {
    int rc = join_workers(j, err, errlen);
    /* all the batch's objects or none of them (none for a compiler without an LLJIT) */
    if (!j->j) keep = 0;
    LLVMOrcJITDylibRef jd = keep ? LLVMOrcLLJITGetMainJITDylib(j->j) : NULL;
    mapsym *syms = NULL;
    int nsyms = 0, capsyms = 0, perf = getenv("NFC_PERF_MAP") != NULL;
    for (int k = 0; k < j->njobs; k++) {
        segjob *jb = &j->jobs[k];
        if (rc == 0 && keep && jb->obj) {
            if (perf) object_symbols(jb->obj, &syms, &nsyms, &capsyms);
            LLVMErrorRef e = LLVMOrcLLJITAddObjectFile(j->j, jd, jb->obj);   /* takes the buffer */
            jb->obj = NULL;
            if (e) { jit_error_msg(e, "jit: adding a segment", err, errlen); rc = -1; }
        }
    }
    clear_jobs(j);
    if (rc == 0 && keep && nsyms) write_perf_map(j, syms, nsyms);
    free(syms);
    return rc;
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
    if (j->th || j->njobs) {
        char e[16];
        jit_segments_finish(j, 0, e, sizeof e);
    }
    free(j->jobs);
    free(j->triple); free(j->cpu); free(j->features); free(j->pipeline);
    for (int i = 0; i < j->nrt; i++) LLVMOrcReleaseResourceTracker(j->rt[i]);
    free(j->rt);
    if (j->j) {
        LLVMErrorRef e = LLVMOrcDisposeLLJIT(j->j);
        if (e) LLVMConsumeError(e);
    }
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv_job);
    pthread_cond_destroy(&j->cv_space);
    free(j);
}

/* compiler/model.c: the public library API of include/nfc.h.
 * Input: .flow text and options. Output: a model holding the flow graph, the derived
 * programs, the parameters, and a backend to run them: the JIT (native code from cg.c/jit.c)
 * or the reference interpreter. Batches are converted to the model's dtype in chunks, so
 * memory stays bounded whatever n is. Every failure leaves a message in nfc_last_error(). */
#include "nfc.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aot.h"
#include "cg.h"
#include "derive.h"
#include "front.h"
#include "grad.h"
#include "init.h"
#include "interp.h"
#include "jit.h"
#include "rt_io.h"

typedef void (*kernel_fn)(int64_t n, int64_t row0, int64_t seed, const void *const *args, const double *scalars,
                          void *const *outs, const void *params, void *ws);

struct nfc_diagnostics {
    arena           ar;
    diag_ctx        dc;
    nfc_diagnostic *d;
    int             n;
};

struct nfc_model {
    arena       ar;
    diag_ctx    dc;
    nfc_options opt;
    ir_graph   *g;
    derived     dv;
    int         D, C;
    int64_t    *off;
    int64_t     ptotal;
    double     *params;
    float      *paramsf;       /* f32 copy for f32 kernels */
    uint64_t    hash;
    /* the training program, built on first use */
    tprog      *gp;
    kernel_fn   gfn;
    int64_t     gws_bytes;
    int64_t     gws_tile_bytes;  /* its per-tile part: the values kept for the backward pass */
    nfc_jit    *gjit;
    nfc_worker *w0;
    /* JIT backend */
    nfc_jit    *jit;
    kernel_fn   fn[PROG_COUNT];
    int64_t     ws_bytes;
    void       *ws;
    char        err[2048];
};

void nfc_options_default(nfc_options *o) {
    memset(o, 0, sizeof *o);
    o->dtype = NFC_F32;
    o->backend = NFC_BACKEND_JIT;
    o->opt_level = 2;
}

static int fail(nfc_model *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(nfc_model *m, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err, sizeof m->err, fmt, ap);
    va_end(ap);
    return -1;
}

const char *nfc_last_error(const nfc_model *m) { return m ? m->err : "no model"; }

/* ---- diagnostics ---- */
int nfc_diagnostics_count(const nfc_diagnostics *d) { return d ? d->n : 0; }
const nfc_diagnostic *nfc_diagnostics_get(const nfc_diagnostics *d, int i) { return d && i >= 0 && i < d->n ? &d->d[i] : NULL; }
void nfc_diagnostics_print(const nfc_diagnostics *d, FILE *out, int color) {
    if (d) diag_render(&d->dc, out, color);
}
void nfc_diagnostics_free(nfc_diagnostics *d) {
    if (!d) return;
    arena_free(&d->ar);
    free(d);
}

/* Move the diagnostics of a failed compilation (and its arena) into a nfc_diagnostics. */
static nfc_diagnostics *take_diags(arena *ar, diag_ctx *dc) {
    nfc_diagnostics *d = calloc(1, sizeof *d);
    if (!d) { arena_free(ar); return NULL; }
    d->ar = *ar;
    d->dc = *dc;
    d->dc.ar = &d->ar;
    d->n = dc->nd;
    d->d = arena_alloc(&d->ar, sizeof(nfc_diagnostic) * (size_t)(dc->nd + 1));
    for (int i = 0; i < dc->nd; i++) {
        const diag *s = &dc->d[i];
        nfc_diagnostic *t = &d->d[i];
        t->file = s->loc.file >= 0 && s->loc.file < dc->nfiles ? dc->files[s->loc.file].name : "nfc";
        t->line = s->loc.line;
        t->column = s->loc.col;
        t->length = s->loc.len;
        t->message = s->msg;
        t->is_note = s->kind == DIAG_NOTE;
    }
    return d;
}

/* ---- compiling ---- */
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) { h ^= b[i]; h *= 0x100000001b3ull; }
    return h;
}

static uint64_t model_hash(const ir_graph *g) {
    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv(h, g->name, strlen(g->name));
    for (int i = 0; i < g->nn; i++) {
        const ir_node *n = &g->nodes[i];
        int32_t v[4 + IR_MAX_IN] = { n->op, n->width, n->iattr[0], n->naux };
        for (int k = 0; k < IR_MAX_IN; k++) v[4 + k] = n->in[k];
        h = fnv(h, v, sizeof v);
        if (n->naux) h = fnv(h, &g->ints[n->aux], sizeof(int32_t) * (size_t)n->naux);
    }
    for (int p = 0; p < g->np; p++) {
        h = fnv(h, g->params[p].name, strlen(g->params[p].name) + 1);
        h = fnv(h, g->params[p].shape, sizeof g->params[p].shape);
    }
    h = fnv(h, &g->base, sizeof g->base);
    return h;
}

/* The JIT compiles each program on its first use (a command that only evaluates log p pays
 * for one program, not four); log_prob is compiled with the model, so that code-generation
 * errors (e.g. an unknown --cpu) surface from nfc_compile_*. */
/* the code generator's options from the model's */
static void model_cg_options(const nfc_model *m, cg_options *co) {
    cg_default_options(co);
    co->dtype = m->opt.dtype == NFC_F64 ? DT_F64 : DT_F32;
    co->vector_width = m->opt.vector_width;
    co->opt_level = m->opt.opt_level;
    co->no_fuse = m->opt.no_fuse;
    co->cpu = m->opt.cpu;
    /* profiling: smaller segments, so that a profile tells the kernels apart (docs/codegen.md) */
    const char *sn = getenv("NFC_SEGMENT_NODES");
    if (sn && atoi(sn) > 0) co->segment_nodes = atoi(sn);
}

/* Program p compiled by JIT j (segments on the JIT's threads as they are built), named
 * <prefix>_<p->name>; its workspace size in *ws. NULL after fail() (what: for messages). */
static kernel_fn jit_program(nfc_model *m, nfc_jit *j, const tprog *p, const char *prefix, const char *what, int64_t *ws,
                             int64_t *tile_ws) {
    cg_options co;
    model_cg_options(m, &co);
    co.segment_sink = jit_compile_async;
    co.segment_ctx = j;
    const tprog *progs[1] = { p };
    cg_module *cm = NULL;
    char err[1024], err2[1024];
    int rc = cg_build(progs, 1, m->g, prefix, &co, &cm, err, sizeof err);
    if (jit_segments_finish(j, rc == 0, err2, sizeof err2) && rc == 0) {
        cg_free(cm);
        fail(m, "code generation%s: %s", what, err2);
        return NULL;
    }
    if (rc) { fail(m, "code generation%s: %s", what, err); return NULL; }
    *ws = cg_workspace_bytes(cm, 0);
    if (tile_ws) *tile_ws = cg_tile_workspace_bytes(cm, 0);
    if (jit_add(j, cm, err, sizeof err)) { fail(m, "JIT: %s", err); return NULL; }
    char name[128];
    snprintf(name, sizeof name, "%s_%s", prefix, p->name);
    kernel_fn f = (kernel_fn)jit_lookup(j, name, err, sizeof err);
    if (!f) fail(m, "JIT: %s", err);
    return f;
}

static int jit_prog(nfc_model *m, int k) {
    if (m->fn[k]) return 0;
    char err[1024];
    if (!m->jit && jit_create_opt(&m->jit, m->opt.opt_level, err, sizeof err)) return fail(m, "JIT: %s", err);
    int64_t b = 0;
    kernel_fn f = jit_program(m, m->jit, m->dv.p[k], "nfc", "", &b, NULL);
    if (!f) return -1;
    if (!m->ws || b > m->ws_bytes) {
        size_t bytes = (size_t)((b + 63) / 64 * 64);
        void *ws = aligned_alloc(64, bytes ? bytes : 64);
        if (!ws) return fail(m, "out of memory for the workspace (%lld bytes)", (long long)b);
        free(m->ws);
        m->ws = ws;
        m->ws_bytes = b;
    }
    m->fn[k] = f;
    return 0;
}

static int build_jit(nfc_model *m) { return jit_prog(m, PROG_LOG_PROB); }

static nfc_model *compile(const char *name, const char *text, size_t len, const char *path, const nfc_options *opt,
                          nfc_diagnostics **diags) {
    if (diags) *diags = NULL;
    nfc_model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    if (opt) m->opt = *opt;
    else nfc_options_default(&m->opt);
    if (m->opt.dtype != NFC_F64) m->opt.dtype = NFC_F32;
    arena_init(&m->ar);
    diag_init(&m->dc, &m->ar);
    sema_result res = { 0 };
    int nerr = path ? front_compile_file(&m->dc, path, &res, NULL) : front_compile_text(&m->dc, name, text, len, &res, NULL);
    if (!nerr) {
        if (m->opt.flow) {
            for (int i = 0; i < res.nflows; i++) if (!strcmp(res.flows[i]->name, m->opt.flow)) m->g = res.flows[i];
            if (!m->g) {
                loc_t l = { 0, 0, 0, 0 };
                diag_error(&m->dc, l, "no flow named '%s' in this file", m->opt.flow);
                nerr = 1;
            }
        } else {
            m->g = res.flows[0];
        }
    }
    if (nerr) {
        nfc_diagnostics *d = take_diags(&m->ar, &m->dc);
        if (diags) *diags = d;
        else nfc_diagnostics_free(d);
        free(m);
        return NULL;
    }
    char err[1024];
    if (derive_all(m->g, &m->ar, &m->dv, err, sizeof err)) {
        loc_t l = m->g->loc;
        diag_error(&m->dc, l, "internal error: %s", err);
        nfc_diagnostics *d = take_diags(&m->ar, &m->dc);
        if (diags) *diags = d;
        else nfc_diagnostics_free(d);
        free(m);
        return NULL;
    }
    m->D = m->g->nodes[m->g->input].width;
    m->C = m->g->context != IR_NONE ? m->g->nodes[m->g->context].width : 0;
    m->off = arena_alloc(&m->ar, sizeof(int64_t) * (size_t)(m->g->np + 1));
    m->ptotal = tir_param_offsets(m->g, m->off);
    m->params = big_calloc((size_t)m->ptotal + 1, sizeof(double));
    m->paramsf = big_calloc((size_t)m->ptotal + 1, sizeof(float));
    m->hash = model_hash(m->g);
    if (!m->params || !m->paramsf) {
        /* a flow within the language's limits can still have 10^10 parameters and more */
        free(m->params);
        free(m->paramsf);
        diag_error(&m->dc, m->g->loc, "out of memory for the parameters of flow '%s' (%lld values)", m->g->name,
                   (long long)m->ptotal);
        nfc_diagnostics *d = take_diags(&m->ar, &m->dc);
        if (diags) *diags = d;
        else nfc_diagnostics_free(d);
        free(m);
        return NULL;
    }
    nfc_params_init(m, m->opt.init_seed, m->opt.init_scale);
    if (m->opt.backend == NFC_BACKEND_JIT && build_jit(m)) {
        loc_t l = { m->g->loc.file, 0, 0, 0 };
        diag_error(&m->dc, l, "%s", m->err);
        jit_free(m->jit);
        m->jit = NULL;
        free(m->ws);
        free(m->params);
        free(m->paramsf);
        nfc_diagnostics *d = take_diags(&m->ar, &m->dc);
        if (diags) *diags = d;
        else nfc_diagnostics_free(d);
        free(m);
        return NULL;
    }
    return m;
}

nfc_model *nfc_compile_file(const char *path, const nfc_options *opt, nfc_diagnostics **diags) {
    return compile(path, NULL, 0, path, opt, diags);
}

nfc_model *nfc_compile_string(const char *name, const char *text, const nfc_options *opt, nfc_diagnostics **diags) {
    return compile(name ? name : "<string>", text, strlen(text), NULL, opt, diags);
}

void nfc_free(nfc_model *m) {
    if (!m) return;
    nfc_worker_free(m->w0);
    jit_free(m->gjit);
    jit_free(m->jit);
    free(m->ws);
    free(m->params);
    free(m->paramsf);
    arena_free(&m->ar);
    free(m);
}

/* keep the f32 copy of the parameters (what f32 kernels read) in step; every function that
 * changes parameters calls this, so concurrent workers only ever read */
static void sync_f32(nfc_model *m) {
    for (int64_t i = 0; i < m->ptotal; i++) m->paramsf[i] = (float)m->params[i];
}

/* ---- queries ---- */
const char *nfc_model_name(const nfc_model *m) { return m->g->name; }
int nfc_model_dim(const nfc_model *m) { return m->D; }
int nfc_model_context_dim(const nfc_model *m) { return m->C; }
const char *nfc_model_input_name(const nfc_model *m) { return m->g->input_name; }
const char *nfc_model_context_name(const nfc_model *m) { return m->C ? m->g->context_name : NULL; }
int nfc_model_dtype(const nfc_model *m) { return m->opt.dtype; }
uint64_t nfc_model_hash(const nfc_model *m) { return m->hash; }

int nfc_param_count(const nfc_model *m) { return m->g->np; }
int64_t nfc_param_total(const nfc_model *m) { return m->ptotal; }
const char *nfc_param_name(const nfc_model *m, int i) { return i >= 0 && i < m->g->np ? m->g->params[i].name : NULL; }
int64_t nfc_param_numel(const nfc_model *m, int i) { return i >= 0 && i < m->g->np ? ir_param_numel(&m->g->params[i]) : 0; }
int nfc_param_shape(const nfc_model *m, int i, int64_t shape[2]) {
    if (i < 0 || i >= m->g->np) return 0;
    shape[0] = m->g->params[i].shape[0];
    shape[1] = m->g->params[i].shape[1];
    return m->g->params[i].rank;
}
int nfc_param_find(const nfc_model *m, const char *name) {
    for (int i = 0; i < m->g->np; i++) if (!strcmp(m->g->params[i].name, name)) return i;
    return -1;
}
int nfc_param_get(const nfc_model *m, int i, double *out) {
    if (i < 0 || i >= m->g->np) return -1;
    memcpy(out, m->params + m->off[i], sizeof(double) * (size_t)ir_param_numel(&m->g->params[i]));
    return 0;
}
int nfc_param_set(nfc_model *m, int i, const double *in) {
    if (i < 0 || i >= m->g->np) return fail(m, "no parameter %d (the model has %d)", i, m->g->np);
    memcpy(m->params + m->off[i], in, sizeof(double) * (size_t)ir_param_numel(&m->g->params[i]));
    sync_f32(m);
    return 0;
}
const double *nfc_params(const nfc_model *m) { return m->params; }
int nfc_params_set(nfc_model *m, const double *all) {
    memcpy(m->params, all, sizeof(double) * (size_t)m->ptotal);
    sync_f32(m);
    return 0;
}
int nfc_params_set_range(nfc_model *m, int64_t at, int64_t n, const double *v) {
    if (at < 0 || n < 0 || at > m->ptotal || n > m->ptotal - at) return -1;
    memcpy(m->params + at, v, sizeof(double) * (size_t)n);
    for (int64_t i = at; i < at + n; i++) m->paramsf[i] = (float)m->params[i];
    return 0;
}
int nfc_params_update_range(nfc_model *m, int64_t at, int64_t n,
                            void (*fn)(void *ctx, int64_t at, double *p, float *pf, int64_t n), void *ctx) {
    if (!fn || at < 0 || n < 0 || at > m->ptotal || n > m->ptotal - at) return -1;
    fn(ctx, at, m->params + at, m->paramsf + at, n);
    return 0;
}
void nfc_params_init(nfc_model *m, uint64_t seed, double init_scale) {
    init_params(m->g, m->params, seed, init_scale);
    sync_f32(m);
}

/* ---- weights ---- */
int nfc_load_weights(nfc_model *m, const char *path) {
    rt_tensorfile tf;
    char err[1024];
    if (rt_st_read(path, &tf, err, sizeof err)) return fail(m, "%s", err);
    int rc = 0;
    const char *h = rt_st_meta(&tf, "nfc.model_hash");
    char want[32];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)m->hash);
    if (h && strcmp(h, want)) {
        const char *fl = rt_st_meta(&tf, "nfc.flow");
        rc = fail(m, "%s: these weights belong to a different model%s%s%s (model hash %s, flow '%s' has %s)", path,
                  fl ? " (flow '" : "", fl ? fl : "", fl ? "')" : "", h, m->g->name, want);
        goto out;
    }
    double *tmp = malloc(sizeof(double) * (size_t)(m->ptotal + 1));
    if (!tmp) { rc = fail(m, "out of memory"); goto out; }
    memcpy(tmp, m->params, sizeof(double) * (size_t)m->ptotal);
    for (int i = 0; i < m->g->np && rc == 0; i++) {
        const ir_param *p = &m->g->params[i];
        const rt_tensor *t = rt_st_find(&tf, p->name);
        char shape[64];
        if (p->rank > 1) snprintf(shape, sizeof shape, "[%lld, %lld]", (long long)p->shape[0], (long long)p->shape[1]);
        else snprintf(shape, sizeof shape, "[%lld]", (long long)p->shape[0]);
        if (!t) { rc = fail(m, "%s: no tensor '%s' (flow '%s' needs it, shape %s)", path, p->name, m->g->name, shape); break; }
        int ok = t->ndim == p->rank && t->shape[0] == p->shape[0] && (p->rank < 2 || t->shape[1] == p->shape[1]);
        if (!ok) {
            char got[96] = "[";
            for (int k = 0; k < t->ndim; k++) {
                size_t at = strlen(got);
                snprintf(got + at, sizeof got - at, "%s%lld", k ? ", " : "", (long long)t->shape[k]);
            }
            strcat(got, "]");
            rc = fail(m, "%s: tensor '%s' has shape %s, but flow '%s' needs %s", path, p->name, got, m->g->name, shape);
            break;
        }
        for (int64_t e = 0; e < t->numel; e++) {
            if (!isfinite(t->data[e])) {
                rc = fail(m, "%s: tensor '%s' holds a non-finite value at element %lld", path, p->name, (long long)e);
                break;
            }
        }
        if (rc == 0) memcpy(tmp + m->off[i], t->data, sizeof(double) * (size_t)t->numel);
    }
    if (rc == 0) {
        memcpy(m->params, tmp, sizeof(double) * (size_t)m->ptotal);
        sync_f32(m);
    }
    free(tmp);
out:
    rt_st_free(&tf);
    return rc;
}

int nfc_save_weights(const nfc_model *m, const char *path) {
    nfc_model *mm = (nfc_model *)m; /* only err is written */
    rt_tensor *t = calloc((size_t)m->g->np + 1, sizeof(rt_tensor));
    if (!t) return fail(mm, "out of memory");
    for (int i = 0; i < m->g->np; i++) {
        const ir_param *p = &m->g->params[i];
        t[i].name = (char *)p->name;
        t[i].dtype = m->opt.dtype == NFC_F64 ? RT_F64 : RT_F32;
        t[i].ndim = p->rank;
        t[i].shape[0] = p->shape[0];
        t[i].shape[1] = p->shape[1];
        t[i].numel = ir_param_numel(p);
        t[i].data = m->params + m->off[i];
    }
    char hash[32];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)m->hash);
    const char *keys[] = { "nfc.model_hash", "nfc.flow", "nfc.version" };
    const char *vals[] = { hash, m->g->name, NFC_VERSION_STRING };
    char err[1024];
    int rc = rt_st_write(path, t, m->g->np, keys, vals, 3, err, sizeof err);
    free(t);
    if (rc) return fail(mm, "%s", err);
    return 0;
}

/* ---- running ---- */
#define CHUNK 4096

/* One thread's share of a JIT call: rows [r_begin, r_end) in chunks of CHUNK, converted to
 * and from f32 for f32 kernels, with the thread's own workspace and staging buffers. */
typedef struct {
    nfc_model    *m;
    int           prog, nouts, aw[2], ow[2];
    int64_t       r_begin, r_end, seed;
    const double *in[2];
    double       *out[2], scalar;
    void         *ws;
    int           rc;
} jit_job;

static void *jit_job_run(void *arg) {
    jit_job *j = arg;
    nfc_model *m = j->m;
    int64_t n = j->r_end - j->r_begin, c0 = n < CHUNK ? n : CHUNK;
    int f32 = m->opt.dtype != NFC_F64;
    size_t esz = f32 ? sizeof(float) : sizeof(double);
    void *fa[2] = { NULL, NULL }, *fo[2] = { NULL, NULL };
    j->rc = 0;
    for (int k = 0; k < 2; k++) {
        /* f32: staging for every input and output; f64: scratch for outputs not asked for */
        if (j->aw[k] && f32) fa[k] = malloc(esz * (size_t)(c0 * j->aw[k]));
        if (k < j->nouts && (f32 || !j->out[k])) fo[k] = malloc(esz * (size_t)(c0 * j->ow[k]));
        if ((j->aw[k] && f32 && !fa[k]) || (k < j->nouts && (f32 || !j->out[k]) && !fo[k])) j->rc = -1;
    }
    for (int64_t r0 = j->r_begin; r0 < j->r_end && j->rc == 0; r0 += CHUNK) {
        int64_t c = j->r_end - r0 < CHUNK ? j->r_end - r0 : CHUNK;
        const void *args[2];
        void *outs[2];
        for (int k = 0; k < 2; k++) {
            if (f32) {
                if (j->aw[k] && j->in[k])
                    for (int64_t i = 0; i < c * j->aw[k]; i++) ((float *)fa[k])[i] = (float)j->in[k][r0 * j->aw[k] + i];
                args[k] = fa[k];
                outs[k] = fo[k];
            } else {
                args[k] = j->in[k] ? j->in[k] + r0 * j->aw[k] : NULL;
                outs[k] = j->out[k] ? j->out[k] + r0 * j->ow[k] : fo[k];
            }
        }
        m->fn[j->prog](c, r0, j->seed, args, &j->scalar, outs, f32 ? (const void *)m->paramsf : (const void *)m->params, j->ws);
        if (f32)
            for (int k = 0; k < j->nouts; k++)
                if (j->out[k])
                    for (int64_t i = 0; i < c * j->ow[k]; i++) j->out[k][r0 * j->ow[k] + i] = ((float *)fo[k])[i];
    }
    for (int k = 0; k < 2; k++) { free(fa[k]); free(fo[k]); }
    return NULL;
}

/* Rows are split into contiguous ranges, one per thread (at least MIN_ROWS_PER_THREAD each);
 * every row's result depends only on that row (and its global index for sampling), so the
 * output does not depend on the number of threads. */
#define MIN_ROWS_PER_THREAD 2048
static int run_jit(nfc_model *m, int prog, int64_t n, uint64_t seed, const double *const in[2], double *const out[2],
                   double scalar, const int aw[2], const int ow[2], int nouts) {
    int T = m->opt.threads > 0 ? m->opt.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (T < 1) T = 1;
    if (T > 256) T = 256;
    if ((int64_t)T * MIN_ROWS_PER_THREAD > n) T = (int)(n / MIN_ROWS_PER_THREAD) > 0 ? (int)(n / MIN_ROWS_PER_THREAD) : 1;
    jit_job jobs[256];
    pthread_t th[256];
    int started[256] = { 0 };
    int rc = 0;
    size_t wsb = (size_t)((m->ws_bytes + 63) / 64 * 64);
    for (int t = 0; t < T; t++) {
        jit_job *j = &jobs[t];
        memset(j, 0, sizeof *j);
        j->m = m;
        j->prog = prog;
        j->nouts = nouts;
        j->aw[0] = aw[0]; j->aw[1] = aw[1]; j->ow[0] = ow[0]; j->ow[1] = ow[1];
        j->r_begin = n * t / T;
        j->r_end = n * (t + 1) / T;
        j->seed = (int64_t)seed;
        j->in[0] = in[0]; j->in[1] = in[1]; j->out[0] = out[0]; j->out[1] = out[1];
        j->scalar = scalar;
        j->ws = t == 0 ? m->ws : aligned_alloc(64, wsb ? wsb : 64);
        if (!j->ws) { rc = fail(m, "out of memory for a workspace"); T = t; break; }
    }
    for (int t = 1; t < T; t++) started[t] = pthread_create(&th[t], NULL, jit_job_run, &jobs[t]) == 0;
    if (T > 0) jit_job_run(&jobs[0]);
    for (int t = 1; t < T; t++) {
        if (started[t]) pthread_join(th[t], NULL);
        else jit_job_run(&jobs[t]);   /* no thread: run it here */
    }
    for (int t = 0; t < T; t++) {
        if (jobs[t].rc) rc = fail(m, "out of memory");
        if (t > 0) free(jobs[t].ws);
    }
    return rc;
}

static int run(nfc_model *m, int prog, int64_t n, int64_t seed, const double *a0, const double *a1, double scalar,
               double *o0, double *o1) {
    if (n < 0) return fail(m, "negative batch size %lld", (long long)n);
    if (n == 0) return 0;
    const tprog *p = m->dv.p[prog];
    int aw[2] = { p->nargs > 0 ? p->arg_w[0] : 0, p->nargs > 1 ? p->arg_w[1] : 0 };
    int ow[2] = { p->nodes[p->outs[0]].w, p->nouts > 1 ? p->nodes[p->outs[1]].w : 0 };
    const double *in[2] = { a0, a1 };
    double *out[2] = { o0, o1 };
    double *scratch[2] = { NULL, NULL };
    /* outputs the caller did not ask for go to scratch space */
    for (int k = 0; k < p->nouts; k++)
        if (!out[k]) {
            scratch[k] = malloc(sizeof(double) * (size_t)(n < CHUNK ? n : CHUNK) * (size_t)ow[k]);
            if (!scratch[k]) { free(scratch[0]); return fail(m, "out of memory"); }
        }
    int rc = 0;
    if (m->opt.backend == NFC_BACKEND_INTERP || !m->jit) {
        for (int64_t r0 = 0; r0 < n && rc == 0; r0 += CHUNK) {
            int64_t c = n - r0 < CHUNK ? n - r0 : CHUNK;
            const double *args[2] = { in[0] ? in[0] + r0 * aw[0] : NULL, in[1] ? in[1] + r0 * aw[1] : NULL };
            double *outs[2] = { out[0] ? out[0] + r0 * ow[0] : scratch[0], out[1] ? out[1] + r0 * ow[1] : scratch[1] };
            char err[512];
            if (interp_run(p, c, r0, (int64_t)seed, args, &scalar, outs, m->params, m->off, err, sizeof err))
                rc = fail(m, "%s", err);
        }
    } else if (jit_prog(m, prog)) {
        rc = -1;
    } else {
        rc = run_jit(m, prog, n, seed, in, out, scalar, aw, ow, p->nouts);
    }
    free(scratch[0]);
    free(scratch[1]);
    return rc;
}

static int need_ctx(nfc_model *m, const double *ctx) {
    if (m->C && !ctx) return fail(m, "flow '%s' has a context '%s' of %d values per sample; none was given", m->g->name,
                                  m->g->context_name, m->C);
    return 0;
}

int nfc_log_prob(nfc_model *m, int64_t n, const double *x, const double *ctx, double *lp) {
    if (need_ctx(m, ctx)) return -1;
    return run(m, PROG_LOG_PROB, n, 0, x, ctx, 1.0, lp, NULL);
}
int nfc_forward(nfc_model *m, int64_t n, const double *x, const double *ctx, double *z, double *logdet) {
    if (need_ctx(m, ctx)) return -1;
    return run(m, PROG_FORWARD, n, 0, x, ctx, 1.0, z, logdet);
}
int nfc_inverse(nfc_model *m, int64_t n, const double *z, const double *ctx, double *x, double *logdet) {
    if (need_ctx(m, ctx)) return -1;
    return run(m, PROG_INVERSE, n, 0, z, ctx, 1.0, x, logdet);
}
int nfc_sample(nfc_model *m, int64_t n, uint64_t seed, double temperature, const double *ctx, double *x, double *lp) {
    if (need_ctx(m, ctx)) return -1;
    if (!(temperature >= 0) || !isfinite(temperature)) return fail(m, "temperature must be a finite number >= 0, not %g", temperature);
    return run(m, PROG_SAMPLE, n, (int64_t)seed, ctx, NULL, temperature, x, lp);
}

/* ---- ahead-of-time builds ---- */
void nfc_aot_options_default(nfc_aot_options *o) {
    memset(o, 0, sizeof *o);
    o->kind = NFC_EMIT_SO;
    o->embed_weights = 1;
}

static int is_ident(const char *s) {
    if (!s || !*s || (!isalpha((unsigned char)*s) && *s != '_')) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_') return 0;
    return 1;
}

/* a temporary name beside path: PATH.tmp.PID */
static void tmp_name(char *buf, size_t len, const char *path, const char *ext) {
    snprintf(buf, len, "%s.tmp.%ld%s", path, (long)getpid(), ext);
}

/* Runs argv (PATH lookup), its stderr and stdout captured into out. Returns the exit status,
 * or -1 if it could not be started. */
static int run_tool(char *const argv[], char *out, size_t outlen) {
    int fd[2];
    out[0] = 0;
    if (pipe(fd)) return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fd[1], 2);
    posix_spawn_file_actions_addclose(&fa, fd[0]);
    pid_t pid;
    extern char **environ;
    int e = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fd[1]);
    size_t at = 0;
    char buf[512];
    ssize_t r;
    while ((r = read(fd[0], buf, sizeof buf)) > 0 || (r < 0 && errno == EINTR)) {
        if (r < 0) continue;
        for (ssize_t i = 0; i < r && at + 1 < outlen; i++) out[at++] = buf[i];
    }
    out[at] = 0;
    close(fd[0]);
    if (e) return -1;
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static int write_header(nfc_model *m, const char *path, const aot_spec *s, const cg_module *cm, int64_t ws,
                        const char *src, int sleef) {
    char tmp[4096];
    tmp_name(tmp, sizeof tmp, path, "");
    FILE *f = fopen(tmp, "w");
    if (!f) return fail(m, "%s: cannot write: %s", path, strerror(errno));
    aot_header(f, s, src, ws, cg_vector_width(cm), cg_triple(cm), cg_cpu(cm), sleef);
    int bad = ferror(f);
    bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path)) {
        int e = errno;
        remove(tmp);
        return fail(m, "%s: cannot write: %s", path, strerror(e));
    }
    return 0;
}

int nfc_aot_build(nfc_model *m, const char *path, const nfc_aot_options *opt) {
    nfc_aot_options defaults;
    if (!opt) { nfc_aot_options_default(&defaults); opt = &defaults; }
    if (!path && opt->kind != NFC_EMIT_HEADER) return fail(m, "no output path");
    const char *prefix = opt->prefix ? opt->prefix : m->g->name;
    if (!is_ident(prefix) || strlen(prefix) > 100)
        return fail(m, "the symbol prefix '%s' is not a C identifier (at most 100 characters)", prefix);
    cg_options co;
    model_cg_options(m, &co);
    co.triple = opt->triple;
    co.cpu = opt->cpu ? opt->cpu : opt->triple ? NULL : m->opt.cpu;
    co.use_sleef = !opt->no_sleef;
    co.tile_pairs = 1;   /* compiled once, run many times: pairs for every program */
    const tprog *progs[PROG_COUNT];
    for (int k = 0; k < PROG_COUNT; k++) progs[k] = m->dv.p[k];
    char kpre[128];
    snprintf(kpre, sizeof kpre, "%s__k", prefix);
    cg_module *cm = NULL;
    char err[2048];
    /* a shared library: the segments are compiled on the compiler threads, each to an object
     * of its own (hidden symbols), while the next are built, and linked with the programs'
     * own object; the other kinds are one module */
    nfc_jit *pool = NULL;
    if (opt->kind == NFC_EMIT_SO) {
        if (jit_compiler_create(&pool, co.opt_level, err, sizeof err)) return fail(m, "code generation: %s", err);
        co.segment_sink = jit_compile_async_hidden;
        co.segment_ctx = pool;
    }
    if (cg_build(progs, PROG_COUNT, m->g, kpre, &co, &cm, err, sizeof err)) {
        char e2[16];
        if (pool) { jit_segments_finish(pool, 0, e2, sizeof e2); jit_free(pool); }
        return fail(m, "code generation: %s", err);
    }
    char **segobj = NULL;
    int nseg = 0;
    int np = m->g->np;
    const char **pn = calloc((size_t)np + 1, sizeof *pn);
    int64_t *ps = calloc(2 * (size_t)np + 1, sizeof *ps);
    if (!pn || !ps) {
        char e2[16];
        if (pool) { jit_segments_finish(pool, 0, e2, sizeof e2); jit_free(pool); }
        free(pn); free(ps); cg_free(cm);
        return fail(m, "out of memory");
    }
    for (int i = 0; i < np; i++) {
        const ir_param *p = &m->g->params[i];
        pn[i] = p->name;
        ps[2 * i] = p->shape[0];
        ps[2 * i + 1] = p->rank > 1 ? p->shape[1] : 0;
    }
    aot_spec s = { prefix, m->D, m->C, co.dtype, m->ptotal, opt->embed_weights ? m->params : NULL, np, pn, ps, m->off, m->hash };
    int64_t ws = 0;
    for (int k = 0; k < PROG_COUNT; k++)
        if (cg_workspace_bytes(cm, k) > ws) ws = cg_workspace_bytes(cm, k);
    int rc = 0;
    const char *src = opt->source_name ? opt->source_name : m->g->file;
    if (aot_finish(cm, &s, err, sizeof err)) { rc = fail(m, "%s", err); goto out; }
    if (opt->kind == NFC_EMIT_LLVM || opt->kind == NFC_EMIT_ASM || opt->kind == NFC_EMIT_OBJ) {
        char tmp[4096];
        tmp_name(tmp, sizeof tmp, path, "");
        int k = opt->kind == NFC_EMIT_ASM ? CG_EMIT_ASM : opt->kind == NFC_EMIT_OBJ ? CG_EMIT_OBJ : CG_EMIT_LLVM;
        if (cg_emit_file(cm, tmp, k, err, sizeof err)) { remove(tmp); rc = fail(m, "%s: %s", path, err); goto out; }
        if (rename(tmp, path)) { rc = fail(m, "%s: cannot write: %s", path, strerror(errno)); remove(tmp); goto out; }
    } else if (opt->kind == NFC_EMIT_SO) {
        char obj[4096], tmp[4096], out[4096];
        tmp_name(obj, sizeof obj, path, ".o");
        tmp_name(tmp, sizeof tmp, path, "");
        if (cg_emit_file(cm, obj, CG_EMIT_OBJ, err, sizeof err)) { remove(obj); rc = fail(m, "%s: %s", path, err); goto out; }
        int wrc = jit_segments_write(pool, tmp, &segobj, &nseg, err, sizeof err);
        jit_free(pool);
        pool = NULL;
        if (wrc) { remove(obj); rc = fail(m, "%s: %s", path, err); goto out; }
        char ccbuf[256];
        const char *cc = opt->cc ? opt->cc : getenv("NFC_CC");
        if (!cc || !*cc) {
            if (opt->triple) {
                const char *t = opt->triple;
                size_t al = strcspn(t, "-");
                /* aarch64-linux-gnu, aarch64-unknown-linux-gnu -> aarch64-linux-gnu-gcc */
                snprintf(ccbuf, sizeof ccbuf, "%.*s-linux-gnu-gcc", (int)al, t);
                cc = ccbuf;
            } else {
                cc = "cc";
            }
        }
        char **argv = malloc(sizeof(char *) * (size_t)(nseg + 12));
        if (!argv) { remove(obj); rc = fail(m, "out of memory"); goto out; }
        int a = 0;
        argv[a++] = (char *)cc;
        argv[a++] = "-shared";
        argv[a++] = "-o";
        argv[a++] = tmp;
        argv[a++] = obj;
        for (int k = 0; k < nseg; k++) argv[a++] = segobj[k];
        if (co.use_sleef) argv[a++] = "-lsleef";
        argv[a++] = "-lm";
        argv[a++] = "-Wl,-z,noexecstack";
        argv[a] = NULL;
        int st = run_tool(argv, out, sizeof out);
        free(argv);
        remove(obj);
        if (st != 0) {
            remove(tmp);
            if (st < 0) rc = fail(m, "%s: cannot run the linker '%s' (set --cc or NFC_CC; for --target, install the cross compiler)", path, cc);
            else rc = fail(m, "%s: linking with '%s' failed (exit %d):\n%s", path, cc, st, out);
            goto out;
        }
        if (rename(tmp, path)) { rc = fail(m, "%s: cannot write: %s", path, strerror(errno)); remove(tmp); goto out; }
    }
    if (opt->header) rc = write_header(m, opt->header, &s, cm, ws, src, co.use_sleef);
    else if (opt->kind == NFC_EMIT_HEADER) rc = write_header(m, path, &s, cm, ws, src, co.use_sleef);
out:
    if (pool) {   /* a shared library whose build stopped before its objects were written */
        char e2[16];
        jit_segments_finish(pool, 0, e2, sizeof e2);
        jit_free(pool);
    }
    for (int k = 0; k < nseg; k++) { remove(segobj[k]); free(segobj[k]); }
    free(segobj);
    cg_free(cm);
    free(pn);
    free(ps);
    return rc;
}

int nfc_emit(nfc_model *m, const char *path, int kind) {
    nfc_aot_options o;
    nfc_aot_options_default(&o);
    o.kind = kind;
    return nfc_aot_build(m, path, &o);
}

/* ---- training ---- */
struct nfc_worker {
    nfc_model *m;
    void      *ws;
    float     *fx, *fc, *flp, *fg;  /* f32 staging */
    double    *lp, *g;             /* per-chunk outputs */
    char       err[1024];
};

static int build_grad(nfc_model *m) {
    if (m->gp) return 0;
    char err[1024];
    tprog *gp = NULL;
    int rc = m->opt.recompute == NFC_RECOMPUTE_INVERSE ? grad_build_recompute(m->g, &m->ar, &gp, err, sizeof err)
                                                       : grad_build(m->g, &m->ar, &gp, err, sizeof err);
    if (rc) return fail(m, "%s", err);
    if (m->opt.backend == NFC_BACKEND_JIT) {
        jit_free(m->gjit);   /* left by a failed earlier attempt, if any */
        m->gjit = NULL;
        if (jit_create_opt(&m->gjit, m->opt.opt_level, err, sizeof err)) return fail(m, "JIT: %s", err);
        m->gfn = jit_program(m, m->gjit, gp, "nfcgrad", " (gradient)", &m->gws_bytes, &m->gws_tile_bytes);
        if (!m->gfn) return -1;
    }
    m->gp = gp;
    return 0;
}

nfc_worker *nfc_worker_new(nfc_model *m) {
    if (build_grad(m)) return NULL;
    nfc_worker *w = calloc(1, sizeof *w);
    if (!w) { fail(m, "out of memory"); return NULL; }
    w->m = m;
    size_t c = CHUNK;
    w->lp = malloc(sizeof(double) * c);
    int ok = w->lp != NULL;
    if (m->gfn) {
        size_t bytes = (size_t)((m->gws_bytes + 63) / 64 * 64);
        w->ws = aligned_alloc(64, bytes ? bytes : 64);
        ok = ok && w->ws;
        if (m->opt.dtype == NFC_F32) {
            w->fx = malloc(sizeof(float) * c * (size_t)m->D);
            w->fc = malloc(sizeof(float) * c * (size_t)(m->C + 1));
            w->flp = malloc(sizeof(float) * c);
            ok = ok && w->fx && w->fc && w->flp;
        }
    }
    if (!ok) { nfc_worker_free(w); fail(m, "out of memory"); return NULL; }
    return w;
}

void nfc_worker_free(nfc_worker *w) {
    if (!w) return;
    free(w->ws); free(w->fx); free(w->fc); free(w->flp); free(w->fg); free(w->lp); free(w->g);
    free(w);
}

const char *nfc_worker_error(const nfc_worker *w) { return w ? w->err : "no worker"; }

int64_t nfc_worker_rows_max(void) { return CHUNK; }

int64_t nfc_worker_workspace_bytes(const nfc_worker *w, int64_t *activations) {
    if (activations) *activations = 0;
    if (!w) return -1;
    if (!w->m->gfn) return 0;
    if (activations) *activations = w->m->gws_tile_bytes;
    return w->m->gws_bytes;
}

int nfc_grad_elem_size(const nfc_model *m) { return m->opt.backend == NFC_BACKEND_JIT && m->opt.dtype == NFC_F32 ? 4 : 8; }

/* one call of the gradient program on c <= CHUNK rows: *loss_sum -= log p row by row, the
 * gradient sum into grad in the program's precision */
static int grad_chunk(nfc_worker *w, int64_t c, const double *xc, const double *cc, double *loss_sum, void *grad) {
    nfc_model *m = w->m;
    double one = 1, s = *loss_sum;
    if (!m->gfn) {
        const double *args[2] = { xc, cc };
        double *outs[2] = { w->lp, grad };
        if (interp_run(m->gp, c, 0, 0, args, &one, outs, m->params, m->off, w->err, sizeof w->err)) return -1;
    } else if (m->opt.dtype == NFC_F64) {
        const void *args[2] = { xc, cc };
        void *outs[2] = { w->lp, grad };
        m->gfn(c, 0, 0, args, &one, outs, m->params, w->ws);
    } else {
        for (int64_t i = 0; i < c * m->D; i++) w->fx[i] = (float)xc[i];
        for (int64_t i = 0; cc && i < c * m->C; i++) w->fc[i] = (float)cc[i];
        const void *args[2] = { w->fx, w->fc };
        void *outs[2] = { w->flp, grad };
        m->gfn(c, 0, 0, args, &one, outs, m->paramsf, w->ws);
        for (int64_t i = 0; i < c; i++) s -= (double)w->flp[i];
        *loss_sum = s;
        return 0;
    }
    for (int64_t i = 0; i < c; i++) s -= w->lp[i];
    *loss_sum = s;
    return 0;
}

static int worker_args_ok(nfc_worker *w, int64_t n, const double *ctx) {
    nfc_model *m = w->m;
    if (m->C && !ctx) { snprintf(w->err, sizeof w->err, "flow '%s' needs its context '%s'", m->g->name, m->g->context_name); return 0; }
    if (n < 0) { snprintf(w->err, sizeof w->err, "negative batch size"); return 0; }
    return 1;
}

int nfc_worker_loss_grad_raw(nfc_worker *w, int64_t n, const double *x, const double *ctx, double *loss_sum, void *grad) {
    if (!worker_args_ok(w, n, ctx)) return -1;
    if (n < 1 || n > CHUNK) {
        snprintf(w->err, sizeof w->err, "nfc_worker_loss_grad_raw takes 1 to %d rows, not %lld", CHUNK, (long long)n);
        return -1;
    }
    *loss_sum = 0;
    return grad_chunk(w, n, x, ctx, loss_sum, grad);
}

int nfc_worker_loss_grad(nfc_worker *w, int64_t n, const double *x, const double *ctx, double *loss_sum, double *grad_sum) {
    nfc_model *m = w->m;
    if (!worker_args_ok(w, n, ctx)) return -1;
    /* grad_sum = ((0 + g0) + g1) + ... over the chunks; the first chunk is stored (0 + g = g
     * exactly), so a shard of one chunk costs one pass over the parameters, not three. The
     * chunk buffers are made on first use (nfc_worker_loss_grad_raw needs none). */
    if (n == 0) memset(grad_sum, 0, sizeof(double) * (size_t)m->ptotal);
    *loss_sum = 0;
    int f32 = nfc_grad_elem_size(m) == 4;
    if (n > 0 && f32 && !w->fg && !(w->fg = malloc(sizeof(float) * (size_t)(m->ptotal + 1)))) goto oom;
    if (n > CHUNK && !f32 && !w->g && !(w->g = malloc(sizeof(double) * (size_t)(m->ptotal + 1)))) goto oom;
    for (int64_t r0 = 0; r0 < n; r0 += CHUNK) {
        int64_t c = n - r0 < CHUNK ? n - r0 : CHUNK;
        const double *xc = x + r0 * m->D, *cc = ctx ? ctx + r0 * m->C : NULL;
        /* an f64 first chunk goes straight into grad_sum */
        void *out = f32 ? (void *)w->fg : r0 == 0 ? (void *)grad_sum : (void *)w->g;
        if (grad_chunk(w, c, xc, cc, loss_sum, out)) return -1;
        if (f32) {
            const float *fg = w->fg;
            if (r0 == 0) for (int64_t i = 0; i < m->ptotal; i++) grad_sum[i] = fg[i];
            else for (int64_t i = 0; i < m->ptotal; i++) grad_sum[i] += fg[i];
        } else if (r0 > 0) {
            for (int64_t i = 0; i < m->ptotal; i++) grad_sum[i] += w->g[i];
        }
    }
    return 0;
oom:
    snprintf(w->err, sizeof w->err, "out of memory");
    return -1;
}

int nfc_loss_grad(nfc_model *m, int64_t n, const double *x, const double *ctx, double *loss, double *grad) {
    if (n <= 0) return fail(m, "the batch is empty");
    if (!m->w0 && !(m->w0 = nfc_worker_new(m))) return -1;
    if (nfc_worker_loss_grad(m->w0, n, x, ctx, loss, grad)) return fail(m, "%s", m->w0->err);
    *loss /= (double)n;
    for (int64_t i = 0; i < m->ptotal; i++) grad[i] /= (double)n;
    return 0;
}

int nfc_actnorm_init(nfc_model *m, int64_t n, const double *x, const double *ctx) {
    if (n < 2) return fail(m, "actnorm initialization needs at least 2 samples");
    if (need_ctx(m, ctx)) return -1;
    for (int i = 0; i < m->g->nn; i++) {
        const ir_node *an = &m->g->nodes[i];
        if (an->op != IR_ACTNORM) continue;
        arena ar;
        arena_init(&ar);
        tprog *p = tprog_new(&ar, "probe");
        char err[512];
        tref v = derive_value_into(m->g, p, an->in[0], err, sizeof err);
        if (v < 0) { arena_free(&ar); return fail(m, "%s", err); }
        t_output(p, v);
        int W = an->width;
        double *val = malloc(sizeof(double) * (size_t)(n * W));
        const double *args[2] = { x, ctx };
        double *outs[1] = { val };
        double one = 1;
        int rc = val ? interp_run(p, n, 0, 0, args, &one, outs, m->params, m->off, err, sizeof err) : -1;
        arena_free(&ar);
        if (rc) { free(val); return fail(m, "%s", val ? err : "out of memory"); }
        double *ls = m->params + m->off[an->param0], *b = m->params + m->off[an->param0 + 1];
        for (int j = 0; j < W; j++) {
            double mean = 0, var = 0;
            for (int64_t r = 0; r < n; r++) mean += val[r * W + j];
            mean /= (double)n;
            for (int64_t r = 0; r < n; r++) var += (val[r * W + j] - mean) * (val[r * W + j] - mean);
            var /= (double)n;
            if (!isfinite(mean) || !isfinite(var)) { free(val); return fail(m, "actnorm initialization: the data gives non-finite statistics"); }
            ls[j] = -0.5 * log(var + 1e-6);
            b[j] = -mean * exp(ls[j]);
        }
        free(val);
        sync_f32(m);
    }
    return 0;
}

int nfc_find_nonfinite(nfc_model *m, int64_t n, const double *x, const double *ctx, char *desc, size_t desclen) {
    if (desc && desclen) desc[0] = 0;
    if (need_ctx(m, ctx)) return -1;
    const tprog *p = m->dv.p[PROG_LOG_PROB];
    double *lp = malloc(sizeof(double) * (size_t)(n + 1));
    if (!lp) return fail(m, "out of memory");
    const double *args[2] = { x, ctx };
    double *outs[1] = { lp };
    double one = 1;
    int bad = -1;
    char err[512];
    int rc = interp_run_check(p, n, 0, 0, args, &one, outs, m->params, m->off, &bad, err, sizeof err);
    free(lp);
    if (rc) return fail(m, "%s", err);
    if (bad < 0) return 0;
    int src = p->nodes[bad].src;
    int layer = src >= 0 ? m->g->nodes[src].layer : -1;
    if (layer < 0) {
        if (desc) snprintf(desc, desclen, "the base distribution");
        return m->g->nlayers + 1;
    }
    if (desc) snprintf(desc, desclen, "%s", m->g->layers[layer].desc);
    return layer + 1;
}

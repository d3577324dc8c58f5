/* runtime/train.c: the training loop of runtime/train.h: AdamW, clipping, the learning-rate
 * schedule, deterministic batches and validation split, the NaN guard, checkpoints.
 * The thread pool that computes a batch's loss and gradient is in runtime/threads.c. */
#include "train.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base.h"
#include "rt_io.h"

#define CKPT_FORMAT "nfc-train-1"

void rt_train_config_default(rt_train_config *c) {
    memset(c, 0, sizeof *c);
    c->batch = 256;
    c->lr = 1e-3;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
    c->weight_decay = 0;
    c->clip_norm = 10;
    c->warmup = 100;
    c->final_lr_frac = 0.05;
    c->epochs = 0;
    c->steps = 0;
    c->valid_frac = 0.1;
    c->valid_every = 0;
    c->seed = 0;
    c->threads = 0;
    c->shard = 0;
    c->save_every = 0;
    c->actnorm_init = 1;
}

static int errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int errf(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* ---- the optimizer ---- */

/* AdamW for one value; the bias corrections are factors: one division per value, not three */
typedef struct { double ibc1, ibc2, decay, lr, beta1, beta2, eps, gscale; } adam_k;

static adam_k adam_consts(int64_t t, double lr, double beta1, double beta2, double eps, double weight_decay,
                          double gscale) {
    adam_k k = { 1.0 / (1.0 - pow(beta1, (double)t)), 1.0 / (1.0 - pow(beta2, (double)t)), 1.0 - lr * weight_decay,
                 lr, beta1, beta2, eps, gscale };
    return k;
}

static inline void adam_one(const adam_k *k, double p, double m, double v, double g, double *po, double *mo,
                            double *vo) {
    double gi = g * k->gscale;   /* gscale 1 when not clipping: the same bits as g */
    double mi = k->beta1 * m + (1.0 - k->beta1) * gi;
    double vi = k->beta2 * v + (1.0 - k->beta2) * gi * gi;
    *po = p * k->decay - k->lr * (mi * k->ibc1) / (sqrt(vi * k->ibc2) + k->eps);
    *mo = mi;
    *vo = vi;
}

/* 1 if x is an infinity or a NaN; integer bits, so that the loops around it vectorize */
static inline uint64_t nonfinite_bits(double x) {
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    return (b & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
}

/* the update into separate buffers, returning what it made that is not finite: 2 a
 * parameter, 4 optimizer state */
RT_PARAM_LOOP static int adam_checked(int64_t n, const double *restrict p, const double *restrict m, const double *restrict v,
                        const double *restrict g, double *restrict po, double *restrict mo, double *restrict vo,
                        const adam_k *k) {
    uint64_t badp = 0, bads = 0;
    for (int64_t i = 0; i < n; i++) {
        adam_one(k, p[i], m[i], v[i], g[i], &po[i], &mo[i], &vo[i]);
        badp |= nonfinite_bits(po[i]);
        bads |= nonfinite_bits(mo[i]) | nonfinite_bits(vo[i]);
    }
    return (badp ? 2 : 0) | (bads ? 4 : 0);
}

/* the update in place (known to be finite: pass 2, or the bound of opt_bound), with the
 * float copies of the parameters; the same arithmetic as adam_checked, so the same bits */
RT_PARAM_LOOP static void adam_apply(int64_t n, double *restrict p, float *restrict pf, double *restrict m,
                                     double *restrict v, const double *restrict g, const adam_k *kp, double mx[3]) {
    const adam_k k = *kp;
    /* the largest |p|, |m| and v written (opt_bound), as the bits of non-negative doubles,
     * whose integer order is their order as numbers (integer maxima vectorize) */
    int64_t ap = 0, amo = 0, av = 0;
    for (int64_t i = 0; i < n; i++) {
        double po, mo, vo;
        adam_one(&k, p[i], m[i], v[i], g[i], &po, &mo, &vo);
        p[i] = po;
        pf[i] = (float)po;
        m[i] = mo;
        v[i] = vo;
        int64_t a, b, c;
        double fa = fabs(po), fb = fabs(mo), fc = fabs(vo);
        memcpy(&a, &fa, 8);
        memcpy(&b, &fb, 8);
        memcpy(&c, &fc, 8);
        ap = a > ap ? a : ap;
        amo = b > amo ? b : amo;
        av = c > av ? c : av;
    }
    memcpy(&mx[0], &ap, 8);
    memcpy(&mx[1], &amo, 8);
    memcpy(&mx[2], &av, 8);
}

void rt_adam_step_to(int64_t n, const double *p, const double *m, const double *v, const double *g, double gscale,
                     double *po, double *mo, double *vo, int64_t t, double lr, double beta1, double beta2, double eps,
                     double weight_decay) {
    adam_k k = adam_consts(t, lr, beta1, beta2, eps, weight_decay, gscale);
    for (int64_t i = 0; i < n; i++) adam_one(&k, p[i], m[i], v[i], g[i], &po[i], &mo[i], &vo[i]);
}

void rt_adam_step(int64_t n, double *p, double *m, double *v, const double *g, int64_t t, double lr, double beta1,
                  double beta2, double eps, double weight_decay) {
    rt_adam_step_to(n, p, m, v, g, 1.0, p, m, v, t, lr, beta1, beta2, eps, weight_decay);
}

double rt_train_clip(int64_t n, double *g, double max_norm) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += g[i] * g[i];
    double norm = sqrt(s);
    if (max_norm > 0 && norm > max_norm && isfinite(norm)) {
        double k = max_norm / norm;
        for (int64_t i = 0; i < n; i++) g[i] *= k;
    }
    return norm;
}

double rt_train_lr(const rt_train_config *c, int64_t t, int64_t total) {
    if (c->warmup > 0 && t <= c->warmup) return c->lr * (double)t / (double)c->warmup;
    if (total <= c->warmup) return c->lr;
    double p = (double)(t - c->warmup) / (double)(total - c->warmup);
    if (p > 1) p = 1;
    double lo = c->lr * c->final_lr_frac;
    return lo + (c->lr - lo) * 0.5 * (1.0 + cos(M_PI * p));
}

/* ---- counter-based randomness ---- */

static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#define SALT_SPLIT 0x76616c6964ull  /* "valid" */
#define SALT_EPOCH 0x65706f6368ull  /* "epoch" */

static uint64_t stream_key(uint64_t seed, uint64_t salt, uint64_t index) {
    return mix64(mix64(seed ^ mix64(salt)) ^ mix64(index * 0xd1b54a32d192ed03ull + salt));
}

/* a permutation of 0..n-1 from a key: Fisher-Yates with draw i = mix64(key + i) */
static void permute(uint64_t key, int64_t n, int64_t *out) {
    for (int64_t i = 0; i < n; i++) out[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        uint64_t r = mix64(key + (uint64_t)i * 0x9e3779b97f4a7c15ull);
        int64_t j = (int64_t)(((unsigned __int128)r * (uint64_t)(i + 1)) >> 64);
        int64_t t = out[i];
        out[i] = out[j];
        out[j] = t;
    }
}

static int64_t valid_count(int64_t n, double frac) {
    if (!(frac > 0) || n < 2) return 0;
    int64_t nv = (int64_t)(frac * (double)n);
    if (nv > n - 1) nv = n - 1;
    return nv < 0 ? 0 : nv;
}

void rt_train_split(uint64_t seed, int64_t n, double valid_frac, int64_t *nvalid, int64_t *train, int64_t *valid) {
    int64_t nv = valid_count(n, valid_frac);
    if (nvalid) *nvalid = nv;
    int64_t *perm = malloc(sizeof(int64_t) * (size_t)(n + 1));
    unsigned char *mark = calloc((size_t)n + 1, 1);
    if (!perm || !mark) { free(perm); free(mark); if (nvalid) *nvalid = -1; return; }
    permute(stream_key(seed, SALT_SPLIT, 0), n, perm);
    for (int64_t i = 0; i < nv; i++) mark[perm[i]] = 1;
    int64_t a = 0, b = 0;
    for (int64_t r = 0; r < n; r++) {
        if (mark[r]) { if (valid) valid[b] = r; b++; }
        else { if (train) train[a] = r; a++; }
    }
    free(perm);
    free(mark);
}

void rt_train_epoch_order(uint64_t seed, int64_t epoch, int64_t ntrain, int64_t *order) {
    permute(stream_key(seed, SALT_EPOCH, (uint64_t)epoch), ntrain, order);
}

void rt_train_batch_rows(uint64_t seed, int64_t ntrain, int64_t batch, int64_t k, int64_t *rows) {
    int64_t spe = ntrain / batch;
    int64_t *order = malloc(sizeof(int64_t) * (size_t)ntrain);
    if (!order) return;
    rt_train_epoch_order(seed, k / spe, ntrain, order);
    memcpy(rows, order + (k % spe) * batch, sizeof(int64_t) * (size_t)batch);
    free(order);
}

static uint64_t hash_doubles(uint64_t h, const double *v, int64_t n) {
    h = mix64(h ^ (uint64_t)n);
    for (int64_t i = 0; v && i < n; i++) {
        uint64_t w;
        memcpy(&w, &v[i], 8);
        h ^= w;
        h *= 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
    }
    return mix64(h);
}

uint64_t rt_train_data_hash(const rt_train_data *d, int D, int C) {
    uint64_t h = 0x6e66632d64617461ull;
    h = hash_doubles(h, d->x, d->n * D);
    h = hash_doubles(h, C ? d->ctx : NULL, C ? d->n * C : 0);
    h = hash_doubles(h, d->vx, d->vx ? d->vn * D : 0);
    h = hash_doubles(h, C && d->vx ? d->vctx : NULL, C && d->vx ? d->vn * C : 0);
    return h;
}

/* the recorded RNG state of a checkpoint: the key of the epoch order of the next update */
static uint64_t rng_state(uint64_t seed, int64_t step, int64_t spe) {
    return stream_key(seed, SALT_EPOCH, (uint64_t)(step / spe));
}

/* ---- checkpoints ---- */

enum { MK_HASH, MK_FLOW, MK_VERSION, MK_FORMAT, MK_OPT, MK_STEP, MK_SEED, MK_RNG, MK_BATCH, MK_SHARD, MK_WARMUP,
       MK_TOTAL, MK_TRAIN, MK_VALID, MK_LR, MK_B1, MK_B2, MK_EPS, MK_WD, MK_CLIP, MK_FINAL, MK_DATA, MK_SUM, MK_COUNT };
static const char *const meta_keys[MK_COUNT] = {
    "nfc.model_hash", "nfc.flow", "nfc.version", "nfc.format", "nfc.optimizer", "nfc.step", "nfc.seed",
    "nfc.rng_state", "nfc.batch", "nfc.shard", "nfc.warmup", "nfc.total_steps", "nfc.train_rows", "nfc.valid_rows",
    "nfc.lr", "nfc.beta1", "nfc.beta2", "nfc.eps", "nfc.weight_decay", "nfc.clip_norm", "nfc.final_lr_frac",
    "nfc.data_hash", "nfc.checksum",
};

/* the checksum of a checkpoint: its step, settings and values (parameters, moments) */
static uint64_t state_checksum(const double *p, const double *m, const double *v, int64_t n, int64_t step,
                               const rt_train_settings *s) {
    double d[16];
    uint64_t u[9] = { (uint64_t)step, s->seed, (uint64_t)s->batch, (uint64_t)s->shard, (uint64_t)s->warmup,
                      (uint64_t)s->total_steps, (uint64_t)s->train_rows, (uint64_t)s->valid_rows, s->data_hash };
    memcpy(d, u, sizeof u);
    double f[7] = { s->lr, s->beta1, s->beta2, s->eps, s->weight_decay, s->clip_norm, s->final_lr_frac };
    memcpy(d + 9, f, sizeof f);
    uint64_t h = hash_doubles(0x636b7074ull, d, 16);
    h = hash_doubles(h, p, n);
    h = hash_doubles(h, m, n);
    return hash_doubles(h, v, n);
}

int rt_train_save_checkpoint(const nfc_model *m, const rt_train_ckpt *c, const char *path, char *err, size_t errlen) {
    int np = nfc_param_count(m);
    if (c->nparams != nfc_param_total(m))
        return errf(err, errlen, "%s: the optimizer state has %lld values, but flow '%s' has %lld parameters", path,
                    (long long)c->nparams, nfc_model_name(m), (long long)nfc_param_total(m));
    rt_tensor *t = calloc((size_t)np * 3 + 1, sizeof *t);
    char **names = calloc((size_t)np * 2 + 1, sizeof *names);
    if (!t || !names) { free(t); free(names); return errf(err, errlen, "%s: out of memory", path); }
    const double *params = nfc_params(m);
    int rc = 0;
    int64_t off = 0;
    for (int i = 0; i < np && rc == 0; i++) {
        const char *nm = nfc_param_name(m, i);
        int64_t shape[2] = { 0, 0 };
        int rank = nfc_param_shape(m, i, shape);
        int64_t numel = nfc_param_numel(m, i);
        size_t len = strlen(nm) + 8;
        names[2 * i] = malloc(len);
        names[2 * i + 1] = malloc(len);
        if (!names[2 * i] || !names[2 * i + 1]) { rc = errf(err, errlen, "%s: out of memory", path); break; }
        snprintf(names[2 * i], len, "adam.m.%s", nm);
        snprintf(names[2 * i + 1], len, "adam.v.%s", nm);
        const double *src[3] = { params + off, c->adam_m + off, c->adam_v + off };
        char *tn[3] = { (char *)nm, names[2 * i], names[2 * i + 1] };
        for (int k = 0; k < 3; k++) {
            rt_tensor *x = &t[k * np + i];
            x->name = tn[k];
            x->dtype = RT_F64;
            x->ndim = rank;
            x->shape[0] = shape[0];
            x->shape[1] = shape[1];
            x->numel = numel;
            x->data = (double *)src[k];
        }
        off += numel;
    }
    if (rc == 0) {
        char v[MK_COUNT][48];
        const char *vals[MK_COUNT];
        const rt_train_settings *s = &c->s;
        int64_t spe = s->batch > 0 && s->train_rows >= s->batch ? s->train_rows / s->batch : 1;
        snprintf(v[MK_HASH], 48, "%016llx", (unsigned long long)nfc_model_hash(m));
        snprintf(v[MK_VERSION], 48, "%s", NFC_VERSION_STRING);
        snprintf(v[MK_FORMAT], 48, "%s", CKPT_FORMAT);
        snprintf(v[MK_OPT], 48, "adamw");
        snprintf(v[MK_STEP], 48, "%lld", (long long)c->step);
        snprintf(v[MK_SEED], 48, "%llu", (unsigned long long)s->seed);
        snprintf(v[MK_RNG], 48, "%016llx", (unsigned long long)rng_state(s->seed, c->step, spe));
        snprintf(v[MK_BATCH], 48, "%lld", (long long)s->batch);
        snprintf(v[MK_SHARD], 48, "%lld", (long long)s->shard);
        snprintf(v[MK_WARMUP], 48, "%lld", (long long)s->warmup);
        snprintf(v[MK_TOTAL], 48, "%lld", (long long)s->total_steps);
        snprintf(v[MK_TRAIN], 48, "%lld", (long long)s->train_rows);
        snprintf(v[MK_VALID], 48, "%lld", (long long)s->valid_rows);
        snprintf(v[MK_LR], 48, "%.17g", s->lr);
        snprintf(v[MK_B1], 48, "%.17g", s->beta1);
        snprintf(v[MK_B2], 48, "%.17g", s->beta2);
        snprintf(v[MK_EPS], 48, "%.17g", s->eps);
        snprintf(v[MK_WD], 48, "%.17g", s->weight_decay);
        snprintf(v[MK_CLIP], 48, "%.17g", s->clip_norm);
        snprintf(v[MK_FINAL], 48, "%.17g", s->final_lr_frac);
        snprintf(v[MK_DATA], 48, "%016llx", (unsigned long long)s->data_hash);
        snprintf(v[MK_SUM], 48, "%016llx", (unsigned long long)state_checksum(params, c->adam_m, c->adam_v, c->nparams, c->step, s));
        for (int k = 0; k < MK_COUNT; k++) vals[k] = v[k];
        vals[MK_FLOW] = nfc_model_name(m);
        rc = rt_st_write(path, t, np * 3, meta_keys, vals, MK_COUNT, err, errlen);
    }
    for (int i = 0; i < np * 2; i++) free(names[i]);
    free(names);
    free(t);
    return rc;
}

void rt_train_ckpt_free(rt_train_ckpt *c) {
    if (!c) return;
    free(c->adam_m);
    free(c->adam_v);
    free(c->path);
    memset(c, 0, sizeof *c);
}

static int meta_i64(const rt_tensorfile *tf, const char *path, int k, int64_t lo, int64_t *out, char *err, size_t errlen) {
    const char *s = rt_st_meta(tf, meta_keys[k]);
    if (!s) return errf(err, errlen, "%s: corrupt checkpoint: no metadata '%s'", path, meta_keys[k]);
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || v < lo || v == LLONG_MAX) {
        char q[64];
        return errf(err, errlen, "%s: corrupt checkpoint: metadata '%s' is '%s', not an integer >= %lld", path,
                    meta_keys[k], rt_io_quote(q, sizeof q, s, strlen(s)), (long long)lo);
    }
    *out = v;
    return 0;
}

static int meta_hex(const rt_tensorfile *tf, const char *path, int k, uint64_t *out, char *err, size_t errlen) {
    const char *s = rt_st_meta(tf, meta_keys[k]);
    if (!s) return errf(err, errlen, "%s: corrupt checkpoint: no metadata '%s'", path, meta_keys[k]);
    char *end;
    unsigned long long v = strtoull(s, &end, 16);
    if (strlen(s) != 16 || *end) {
        char q[64];
        return errf(err, errlen, "%s: corrupt checkpoint: metadata '%s' is '%s', not 16 hex digits", path, meta_keys[k],
                    rt_io_quote(q, sizeof q, s, strlen(s)));
    }
    *out = v;
    return 0;
}

static int meta_u64(const rt_tensorfile *tf, const char *path, int k, uint64_t *out, char *err, size_t errlen) {
    const char *s = rt_st_meta(tf, meta_keys[k]);
    if (!s) return errf(err, errlen, "%s: corrupt checkpoint: no metadata '%s'", path, meta_keys[k]);
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end || *s == '-' || v == ULLONG_MAX) {
        char q[64];
        return errf(err, errlen, "%s: corrupt checkpoint: metadata '%s' is '%s', not a non-negative integer", path,
                    meta_keys[k], rt_io_quote(q, sizeof q, s, strlen(s)));
    }
    *out = v;
    return 0;
}

/* a finite number in [lo, hi] (hi_open: < hi) */
static int meta_f(const rt_tensorfile *tf, const char *path, int k, double lo, double hi, int lo_open, int hi_open,
                  double *out, char *err, size_t errlen) {
    const char *s = rt_st_meta(tf, meta_keys[k]);
    if (!s) return errf(err, errlen, "%s: corrupt checkpoint: no metadata '%s'", path, meta_keys[k]);
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !isfinite(v) || v < lo || v > hi || (lo_open && v == lo) || (hi_open && v == hi)) {
        char q[64];
        return errf(err, errlen, "%s: corrupt checkpoint: metadata '%s' is '%s', not a number in %c%g, %g%c", path,
                    meta_keys[k], rt_io_quote(q, sizeof q, s, strlen(s)), lo_open ? '(' : '[', lo, hi, hi_open ? ')' : ']');
    }
    *out = v;
    return 0;
}

static void shape_text(char *buf, size_t len, int ndim, const int64_t *shape) {
    size_t at = (size_t)snprintf(buf, len, "[");
    for (int k = 0; k < ndim && at < len; k++) at += (size_t)snprintf(buf + at, len - at, "%s%lld", k ? ", " : "", (long long)shape[k]);
    if (at < len) snprintf(buf + at, len - at, "]");
}

/* tensor `name` of the parameter's shape, finite (and >= 0 when nonneg), copied to dst */
static int take_tensor(const rt_tensorfile *tf, const nfc_model *m, const char *path, int i, const char *name, int nonneg,
                       double *dst, char *err, size_t errlen) {
    int64_t shape[2] = { 0, 0 };
    int rank = nfc_param_shape(m, i, shape);
    char want[64], got[96];
    shape_text(want, sizeof want, rank, shape);
    const rt_tensor *t = rt_st_find(tf, name);
    if (!t) return errf(err, errlen, "%s: no tensor '%s' (flow '%s' needs it, shape %s)", path, name, nfc_model_name(m), want);
    int ok = t->ndim == rank;
    for (int k = 0; ok && k < rank; k++) ok = t->shape[k] == shape[k];
    if (!ok) {
        shape_text(got, sizeof got, t->ndim, t->shape);
        return errf(err, errlen, "%s: tensor '%s' has shape %s, but flow '%s' needs %s", path, name, got, nfc_model_name(m), want);
    }
    for (int64_t e = 0; e < t->numel; e++) {
        if (!isfinite(t->data[e]))
            return errf(err, errlen, "%s: tensor '%s' holds a non-finite value at element %lld", path, name, (long long)e);
        if (nonneg && t->data[e] < 0)
            return errf(err, errlen, "%s: tensor '%s' holds a negative second moment at element %lld", path, name, (long long)e);
    }
    memcpy(dst, t->data, sizeof(double) * (size_t)t->numel);
    return 0;
}

int rt_train_load_checkpoint(nfc_model *m, const char *path, rt_train_ckpt *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    rt_tensorfile tf;
    if (rt_st_read(path, &tf, err, errlen)) return -1;
    int rc = 0;
    int64_t P = nfc_param_total(m);
    double *p = NULL, *mm = NULL, *vv = NULL;
    char *name = NULL;
    rt_train_ckpt c;
    memset(&c, 0, sizeof c);
    uint64_t h;
    const char *hs = rt_st_meta(&tf, "nfc.model_hash");
    if (!hs) {
        rc = errf(err, errlen, "%s: not a checkpoint written by nfc (no metadata 'nfc.model_hash')", path);
        goto out;
    }
    if (meta_hex(&tf, path, MK_HASH, &h, err, errlen)) { rc = -1; goto out; }
    if (h != nfc_model_hash(m)) {
        const char *fl = rt_st_meta(&tf, "nfc.flow");
        char q[64];
        rc = errf(err, errlen, "%s: this checkpoint belongs to a different model%s%s%s (model hash %s), not to flow '%s' (hash %016llx)",
                  path, fl ? " (flow '" : "", fl ? rt_io_quote(q, sizeof q, fl, strlen(fl)) : "", fl ? "')" : "", hs,
                  nfc_model_name(m), (unsigned long long)nfc_model_hash(m));
        goto out;
    }
    const char *fmt = rt_st_meta(&tf, "nfc.format");
    if (!fmt) {
        rc = errf(err, errlen, "%s: a weights file, not a training checkpoint (it has no optimizer state): start a new run from "
                  "it with --weights instead", path);
        goto out;
    }
    if (strcmp(fmt, CKPT_FORMAT)) {
        char q[64];
        rc = errf(err, errlen, "%s: unknown checkpoint format '%s' (this nfc reads '%s')", path, rt_io_quote(q, sizeof q, fmt, strlen(fmt)),
                  CKPT_FORMAT);
        goto out;
    }
    rt_train_settings *s = &c.s;
    uint64_t rng;
    if (meta_i64(&tf, path, MK_STEP, 0, &c.step, err, errlen) || meta_u64(&tf, path, MK_SEED, &s->seed, err, errlen) ||
        meta_hex(&tf, path, MK_RNG, &rng, err, errlen) || meta_i64(&tf, path, MK_BATCH, 1, &s->batch, err, errlen) ||
        meta_i64(&tf, path, MK_SHARD, 1, &s->shard, err, errlen) || meta_i64(&tf, path, MK_WARMUP, 0, &s->warmup, err, errlen) ||
        meta_i64(&tf, path, MK_TOTAL, 1, &s->total_steps, err, errlen) ||
        meta_i64(&tf, path, MK_TRAIN, 1, &s->train_rows, err, errlen) ||
        meta_i64(&tf, path, MK_VALID, 0, &s->valid_rows, err, errlen) ||
        meta_f(&tf, path, MK_LR, 0, INFINITY, 1, 0, &s->lr, err, errlen) ||
        meta_f(&tf, path, MK_B1, 0, 1, 0, 1, &s->beta1, err, errlen) ||
        meta_f(&tf, path, MK_B2, 0, 1, 0, 1, &s->beta2, err, errlen) ||
        meta_f(&tf, path, MK_EPS, 0, INFINITY, 1, 0, &s->eps, err, errlen) ||
        meta_f(&tf, path, MK_WD, 0, INFINITY, 0, 0, &s->weight_decay, err, errlen) ||
        meta_f(&tf, path, MK_CLIP, 0, INFINITY, 0, 0, &s->clip_norm, err, errlen) ||
        meta_f(&tf, path, MK_FINAL, 0, 1, 0, 0, &s->final_lr_frac, err, errlen) ||
        meta_hex(&tf, path, MK_DATA, &s->data_hash, err, errlen)) {
        rc = -1;
        goto out;
    }
    if (c.step > s->total_steps) {
        rc = errf(err, errlen, "%s: corrupt checkpoint: step %lld is past its total of %lld steps", path, (long long)c.step,
                  (long long)s->total_steps);
        goto out;
    }
    if (s->batch > s->train_rows) {
        rc = errf(err, errlen, "%s: corrupt checkpoint: batch %lld is larger than its %lld training rows", path,
                  (long long)s->batch, (long long)s->train_rows);
        goto out;
    }
    if (rng != rng_state(s->seed, c.step, s->train_rows / s->batch)) {
        rc = errf(err, errlen, "%s: corrupt checkpoint: the RNG state does not match its seed and step", path);
        goto out;
    }
    p = malloc(sizeof(double) * (size_t)(P + 1));
    mm = malloc(sizeof(double) * (size_t)(P + 1));
    vv = malloc(sizeof(double) * (size_t)(P + 1));
    if (!p || !mm || !vv) { rc = errf(err, errlen, "%s: out of memory", path); goto out; }
    int64_t off = 0;
    for (int i = 0; i < nfc_param_count(m) && rc == 0; i++) {
        const char *nm = nfc_param_name(m, i);
        size_t len = strlen(nm) + 8;
        free(name);
        name = malloc(len);
        if (!name) { rc = errf(err, errlen, "%s: out of memory", path); break; }
        rc = take_tensor(&tf, m, path, i, nm, 0, p + off, err, errlen);
        snprintf(name, len, "adam.m.%s", nm);
        if (rc == 0) rc = take_tensor(&tf, m, path, i, name, 0, mm + off, err, errlen);
        snprintf(name, len, "adam.v.%s", nm);
        if (rc == 0) rc = take_tensor(&tf, m, path, i, name, 1, vv + off, err, errlen);
        off += nfc_param_numel(m, i);
    }
    if (rc) goto out;
    uint64_t sum;
    if (meta_hex(&tf, path, MK_SUM, &sum, err, errlen)) { rc = -1; goto out; }
    if (sum != state_checksum(p, mm, vv, P, c.step, &c.s)) {
        rc = errf(err, errlen, "%s: corrupt checkpoint: its values do not match the checksum in the header", path);
        goto out;
    }
    c.path = strdup(path);
    if (!c.path) { rc = errf(err, errlen, "%s: out of memory", path); goto out; }
    nfc_params_set(m, p);
    c.nparams = P;
    c.adam_m = mm;
    c.adam_v = vv;
    mm = vv = NULL;
    *out = c;
out:
    free(name);
    free(p);
    free(mm);
    free(vv);
    rt_st_free(&tf);
    return rc;
}

/* ---- the training loop ---- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 1024 ? 1024 : (int)n;
}

/* compare a resumed run's settings with the checkpoint's; names the first that differs */
static int check_resume(const rt_train_settings *now, const rt_train_settings *ck, char *err, size_t errlen) {
    const char *tail = "; a resumed run must use the settings it started with";
    if (now->seed != ck->seed)
        return errf(err, errlen, "the checkpoint was trained with seed %llu, not %llu (--seed)%s", (unsigned long long)ck->seed,
                    (unsigned long long)now->seed, tail);
    if (now->data_hash != ck->data_hash || now->train_rows + now->valid_rows != ck->train_rows + ck->valid_rows) {
        if (now->train_rows + now->valid_rows != ck->train_rows + ck->valid_rows || now->train_rows != ck->train_rows)
            return errf(err, errlen, "the checkpoint was trained on %lld rows (%lld training, %lld validation), not %lld "
                        "(%lld training, %lld validation)%s", (long long)(ck->train_rows + ck->valid_rows),
                        (long long)ck->train_rows, (long long)ck->valid_rows, (long long)(now->train_rows + now->valid_rows),
                        (long long)now->train_rows, (long long)now->valid_rows, tail);
        return errf(err, errlen, "the data differ from the data the checkpoint was trained on (same row counts, different "
                    "values)%s", tail);
    }
    if (now->train_rows != ck->train_rows || now->valid_rows != ck->valid_rows)
        return errf(err, errlen, "the checkpoint was trained on %lld rows with %lld held out for validation, not %lld "
                    "(--valid-fraction / --valid)%s", (long long)ck->train_rows, (long long)ck->valid_rows,
                    (long long)now->valid_rows, tail);
    if (now->batch != ck->batch)
        return errf(err, errlen, "the checkpoint was trained with batch size %lld, not %lld (--batch)%s", (long long)ck->batch,
                    (long long)now->batch, tail);
    if (now->lr != ck->lr)
        return errf(err, errlen, "the checkpoint was trained with learning rate %.17g, not %.17g (--lr)%s", ck->lr, now->lr, tail);
    if (now->total_steps != ck->total_steps)
        return errf(err, errlen, "the checkpoint was trained for a total of %lld steps, not %lld (--steps / --epochs)%s; "
                    "to train further, start a new run from it with --weights", (long long)ck->total_steps,
                    (long long)now->total_steps, tail);
    if (now->warmup != ck->warmup)
        return errf(err, errlen, "the checkpoint was trained with %lld warm-up steps, not %lld (--warmup)%s", (long long)ck->warmup,
                    (long long)now->warmup, tail);
    if (now->weight_decay != ck->weight_decay)
        return errf(err, errlen, "the checkpoint was trained with weight decay %.17g, not %.17g (--weight-decay)%s",
                    ck->weight_decay, now->weight_decay, tail);
    if (now->clip_norm != ck->clip_norm)
        return errf(err, errlen, "the checkpoint was trained with gradient clipping at %.17g, not %.17g (--clip)%s",
                    ck->clip_norm, now->clip_norm, tail);
    if (now->beta1 != ck->beta1 || now->beta2 != ck->beta2 || now->eps != ck->eps)
        return errf(err, errlen, "the checkpoint was trained with Adam betas %.17g, %.17g and eps %.17g, not %.17g, %.17g, %.17g%s",
                    ck->beta1, ck->beta2, ck->eps, now->beta1, now->beta2, now->eps, tail);
    if (now->final_lr_frac != ck->final_lr_frac)
        return errf(err, errlen, "the checkpoint was trained with a final learning-rate fraction %.17g, not %.17g%s",
                    ck->final_lr_frac, now->final_lr_frac, tail);
    if (now->shard != ck->shard)
        return errf(err, errlen, "the checkpoint was trained with shards of %lld rows, not %lld%s", (long long)ck->shard,
                    (long long)now->shard, tail);
    return 0;
}

static int check_config(const rt_train_config *c, char *err, size_t errlen) {
    if (c->batch < 1) return errf(err, errlen, "the batch size must be at least 1, not %lld", (long long)c->batch);
    if (!(c->lr > 0) || !isfinite(c->lr)) return errf(err, errlen, "the learning rate must be a number > 0, not %g", c->lr);
    if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
        return errf(err, errlen, "Adam's betas must be in [0, 1), not %g and %g", c->beta1, c->beta2);
    if (!(c->eps > 0) || !isfinite(c->eps)) return errf(err, errlen, "Adam's eps must be a number > 0, not %g", c->eps);
    if (!(c->weight_decay >= 0) || !isfinite(c->weight_decay))
        return errf(err, errlen, "the weight decay must be a number >= 0, not %g", c->weight_decay);
    if (!(c->clip_norm >= 0) || !isfinite(c->clip_norm))
        return errf(err, errlen, "the clipping norm must be a number >= 0, not %g", c->clip_norm);
    if (c->warmup < 0) return errf(err, errlen, "the warm-up must be >= 0 steps, not %lld", (long long)c->warmup);
    if (!(c->final_lr_frac >= 0 && c->final_lr_frac <= 1))
        return errf(err, errlen, "the final learning-rate fraction must be in [0, 1], not %g", c->final_lr_frac);
    if (c->epochs < 0 || c->steps < 0) return errf(err, errlen, "epochs and steps must be >= 0");
    if (c->epochs > 0 && c->steps > 0) return errf(err, errlen, "give epochs or steps, not both");
    if (!(c->valid_frac >= 0 && c->valid_frac < 1))
        return errf(err, errlen, "the validation fraction must be in [0, 1), not %g", c->valid_frac);
    if (c->valid_every < 0 || c->save_every < 0) return errf(err, errlen, "valid_every and save_every must be >= 0");
    if (c->shard < 0) return errf(err, errlen, "the shard size must be at least 1 row (or 0: automatic), not %lld", (long long)c->shard);
    if (c->threads < 0) return errf(err, errlen, "the thread count must be >= 0, not %d", c->threads);
    return 0;
}

/* the name of the parameter that value idx (of nfc_param_total) belongs to */
static const char *param_at(const nfc_model *m, int64_t idx) {
    int64_t off = 0;
    for (int i = 0; i < nfc_param_count(m); i++) {
        off += nfc_param_numel(m, i);
        if (idx < off) return nfc_param_name(m, i);
    }
    return NULL;
}

/* the first parameter (name) whose values [off, off+numel) contain a non-finite value of v */
static const char *nonfinite_param(const nfc_model *m, const double *v) {
    for (int64_t i = 0; i < nfc_param_total(m); i++)
        if (!isfinite(v[i])) return param_at(m, i);
    return NULL;
}

/* The optimizer's passes over the parameters, on the pool, in blocks of OPT_BLOCK values.
 * The blocks do not depend on the thread count, and the only sum (of squares, for the norm)
 * is summed per block and then over the blocks in order, so the update is the same bits for
 * any thread count. Pass 1 (the mean gradient, its finiteness and the blocks' sums of
 * squares) is done by the pool while it adds the shards (rt_pool_loss_grad). Pass 2
 * computes the update and only checks that it is finite; pass 3 computes it again and
 * stores it, in place: the state of the last step stays intact until every new value is
 * known to be finite, without second copies of the parameters and moments. */
#define OPT_BLOCK 16384
#define OPT_SUB   512       /* values computed at a time, into scratch on the stack */
typedef struct {
    int64_t       P;
    double       *g;        /* the mean gradient */
    char         *bad;      /* per block: 2 a non-finite parameter, 4 non-finite optimizer state
                               (pass 2) */
    const double *p;        /* the model's parameters (written through nfc_params_update_range) */
    double       *m, *v, gscale, lr;
    double       *mx;       /* per block, from pass 3: the largest |p|, |m| and v (opt_bound) */
    int           mx_known; /* mx holds the state's maxima (pass 3 ran since the state was set) */
    int64_t       t;
    const rt_train_config *cfg;
    nfc_model    *model;
} opt_pass;

static void blk_range(const opt_pass *o, int64_t b, int64_t *i0, int64_t *i1) {
    *i0 = b * OPT_BLOCK;
    *i1 = *i0 + OPT_BLOCK < o->P ? *i0 + OPT_BLOCK : o->P;
}

/* AdamW with clipping over values [i0, i1), into scratch: what is not finite in the result
 * (adam_checked's bits). With first: the index of the first value whose parameter (which 0)
 * or moment (1: m, 2: v) is not finite, or -1. */
static int opt_values(opt_pass *o, int64_t i0, int64_t i1, int which, int64_t *first) {
    double po[OPT_SUB], mo[OPT_SUB], vo[OPT_SUB];
    const rt_train_config *c = o->cfg;
    adam_k k = adam_consts(o->t, o->lr, c->beta1, c->beta2, c->eps, c->weight_decay, o->gscale);
    int bad = 0;
    if (first) *first = -1;
    for (int64_t s = i0; s < i1; s += OPT_SUB) {
        int64_t n = i1 - s < OPT_SUB ? i1 - s : OPT_SUB;
        int r = adam_checked(n, o->p + s, o->m + s, o->v + s, o->g + s, po, mo, vo, &k);
        bad |= r;
        const double *w = which == 0 ? po : which == 1 ? mo : vo;
        for (int64_t j = 0; first && r && j < n; j++)
            if (!isfinite(w[j])) { *first = s + j; return bad; }
    }
    return bad;
}

/* pass 2: is the update finite? */
static void opt_check(void *ctx, int64_t b) {
    opt_pass *o = ctx;
    int64_t i0, i1;
    blk_range(o, b, &i0, &i1);
    o->bad[b] = (char)opt_values(o, i0, i1, 0, NULL);
}

/* pass 3: the update, in place into the model's parameters and the moments */
static void opt_apply_range(void *ctx, int64_t at, double *p, float *pf, int64_t n) {
    opt_pass *o = ctx;
    const rt_train_config *c = o->cfg;
    adam_k k = adam_consts(o->t, o->lr, c->beta1, c->beta2, c->eps, c->weight_decay, o->gscale);
    adam_apply(n, p, pf, o->m + at, o->v + at, o->g + at, &k, o->mx + 3 * (at / OPT_BLOCK));
}
static void opt_apply(void *ctx, int64_t b) {
    opt_pass *o = ctx;
    int64_t i0, i1;
    blk_range(o, b, &i0, &i1);
    (void)nfc_params_update_range(o->model, i0, i1 - i0, opt_apply_range, o);
}

/* Is the update finite whatever the values? From the state's maxima (|p|, |m|, v, kept by
 * pass 3) and the gradient's norm (each |g| is at most the norm), bounds of every quantity
 * adam_one computes: |m'| <= max|m| + max|g|, v' <= max v + max g^2, and the step's ratio
 * |m' ibc1| / (sqrt(v' ibc2) + eps) <= |m'| ibc1 / eps (eps > 0). If all stay far below the
 * largest double (1e300: the rounding of a few operations cannot close that gap), no value
 * can overflow or be a NaN, and pass 2 is not needed: its answer is known. Otherwise (no
 * maxima yet, eps = 0, a huge state or gradient) pass 2 runs. */
int rt_adam_bound_finite(double pmax, double mmax, double vmax, double gnorm, double gscale, int64_t t, double lr,
                         double beta1, double beta2, double eps, double weight_decay) {
    if (!(eps > 0) || !isfinite(gnorm) || !isfinite(gscale) || !(pmax >= 0) || !(mmax >= 0) || !(vmax >= 0)) return 0;
    if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1) || t < 1) return 0;   /* the bounds assume these */
    adam_k k = adam_consts(t, lr, beta1, beta2, eps, weight_decay, gscale);
    double G = 2 * gnorm * fabs(gscale);   /* twice: the norm's own rounding */
    double mb = mmax + G, vb = vmax + G * G;
    double r = mb * fabs(k.ibc1) / eps;
    double pb = pmax * fabs(k.decay) + fabs(k.lr) * r;
    const double lim = 1e300;
    return mb < lim && vb < lim && vb * fabs(k.ibc2) < lim && r < lim && pb < lim;
}

static int opt_bound(const opt_pass *o, int64_t nblk, double gnorm) {
    if (!o->mx_known) return 0;
    double P = 0, M = 0, V = 0;
    for (int64_t b = 0; b < nblk; b++) {
        P = fmax(P, o->mx[3 * b]);
        M = fmax(M, o->mx[3 * b + 1]);
        V = fmax(V, o->mx[3 * b + 2]);
    }
    const rt_train_config *c = o->cfg;
    return rt_adam_bound_finite(P, M, V, gnorm, o->gscale, o->t, o->lr, c->beta1, c->beta2, c->eps, c->weight_decay);
}

/* verify_bound: every block's recorded maxima (opt_bound) against the state itself */
static int verify_maxima(const opt_pass *o, int64_t nblk, char *err, size_t errlen) {
    for (int64_t b = 0; b < nblk; b++) {
        int64_t i0 = b * OPT_BLOCK, i1 = i0 + OPT_BLOCK < o->P ? i0 + OPT_BLOCK : o->P;
        double P = 0, M = 0, V = 0;
        for (int64_t i = i0; i < i1; i++) {
            P = fmax(P, fabs(o->p[i]));
            M = fmax(M, fabs(o->m[i]));
            V = fmax(V, fabs(o->v[i]));
        }
        if (P > o->mx[3 * b] || M > o->mx[3 * b + 1] || V > o->mx[3 * b + 2])
            return errf(err, errlen, "internal error (verify_bound): block %lld's maxima %g %g %g are below the state's "
                        "%g %g %g", (long long)b, o->mx[3 * b], o->mx[3 * b + 1], o->mx[3 * b + 2], P, M, V);
    }
    return 0;
}

/* the parameter whose new value (which 0) or moment (1: m, 2: v) is the first not finite */
static const char *nonfinite_update(opt_pass *o, int which) {
    int64_t first;
    for (int64_t i0 = 0; i0 < o->P; i0 += OPT_BLOCK) {
        int64_t i1 = i0 + OPT_BLOCK < o->P ? i0 + OPT_BLOCK : o->P;
        (void)opt_values(o, i0, i1, which, &first);
        if (first >= 0) return param_at(o->model, first);
    }
    return NULL;
}

/* mean NLL of the validation rows, summed in row order */
static int validate(nfc_model *m, const double *vx, const double *vc, int64_t nv, double *lp, double *nll, char *err,
                    size_t errlen) {
    if (nv == 0) { *nll = NAN; return 0; }
    if (nfc_log_prob(m, nv, vx, vc, lp)) return errf(err, errlen, "validation: %s", nfc_last_error(m));
    double s = 0;
    for (int64_t i = 0; i < nv; i++) s -= lp[i];
    *nll = s / (double)nv;
    return 0;
}

static void gather(const double *src, int w, const int64_t *rows, const int64_t *map, int64_t n, double *dst) {
    for (int64_t i = 0; i < n; i++) {
        int64_t r = map ? map[rows[i]] : rows[i];
        memcpy(dst + i * w, src + r * w, sizeof(double) * (size_t)w);
    }
}

int rt_train_run(nfc_model *m, const rt_train_config *cfg, const rt_train_data *data, const rt_train_ckpt *resume,
                 const rt_train_callbacks *cb, rt_train_result *res, char *err, size_t errlen) {
    rt_train_result rr;
    memset(&rr, 0, sizeof rr);
    rr.valid_nll = rr.valid_bpd = rr.train_loss = NAN;
    if (res) *res = rr;
    if (err && errlen) err[0] = 0;
    if (check_config(cfg, err, errlen)) return -1;
    const int D = nfc_model_dim(m), C = nfc_model_context_dim(m);
    const int64_t P = nfc_param_total(m);
    if (!data || !data->x || data->n < 1) return errf(err, errlen, "no training data");
    if (C && !data->ctx)
        return errf(err, errlen, "flow '%s' has a context '%s' of %d values per sample; the training data have none",
                    nfc_model_name(m), nfc_model_context_name(m), C);
    if (data->vx && data->vn < 1) return errf(err, errlen, "the validation set is empty");
    if (C && data->vx && !data->vctx)
        return errf(err, errlen, "flow '%s' has a context '%s'; the validation data have none", nfc_model_name(m),
                    nfc_model_context_name(m));

    /* the plan: split, batch, steps */
    int64_t n = data->n, ntrain, nvalid;
    int64_t *train_idx = NULL, *valid_idx = NULL;
    if (data->vx) {
        ntrain = n;
        nvalid = data->vn;
    } else {
        nvalid = valid_count(n, cfg->valid_frac);
        ntrain = n - nvalid;
        train_idx = malloc(sizeof(int64_t) * (size_t)(ntrain + 1));
        valid_idx = malloc(sizeof(int64_t) * (size_t)(nvalid + 1));
        if (!train_idx || !valid_idx) { free(train_idx); free(valid_idx); return errf(err, errlen, "out of memory"); }
        int64_t got;
        rt_train_split(cfg->seed, n, cfg->valid_frac, &got, train_idx, valid_idx);
        if (got != nvalid) { free(train_idx); free(valid_idx); return errf(err, errlen, "out of memory"); }
    }
    int64_t B = cfg->batch < ntrain ? cfg->batch : ntrain;
    int64_t spe = ntrain / B;
    int64_t total = cfg->steps > 0 ? cfg->steps : (cfg->epochs > 0 ? cfg->epochs : 20) * spe;
    rt_train_settings s;
    memset(&s, 0, sizeof s);
    s.seed = cfg->seed;
    s.batch = B;
    /* automatic shards: a quarter of the batch, a multiple of 16 rows, 32 to 256 rows. Each
     * shard is one call of the gradient kernel, which costs a pass over the parameters
     * besides the rows' work (measured: 512-row shards trained 2-2.4x faster than 32-row
     * ones at H = 64 and 256); a quarter of the batch keeps 4 shards for the threads. The
     * size depends only on the batch, never on the thread count. */
    int64_t shard = cfg->shard;
    if (shard <= 0) {
        shard = (B / 4 + 15) / 16 * 16;
        if (shard < 32) shard = 32;
        if (shard > 256) shard = 256;
    }
    s.shard = shard;
    s.warmup = cfg->warmup;
    s.total_steps = total;
    s.train_rows = ntrain;
    s.valid_rows = nvalid;
    s.lr = cfg->lr;
    s.beta1 = cfg->beta1;
    s.beta2 = cfg->beta2;
    s.eps = cfg->eps;
    s.weight_decay = cfg->weight_decay;
    s.clip_norm = cfg->clip_norm;
    s.final_lr_frac = cfg->final_lr_frac;
    s.data_hash = rt_train_data_hash(data, D, C);
    int64_t step0 = 0;
    int rc = 0;
    if (resume) {
        if (resume->nparams != P) {
            free(train_idx); free(valid_idx);
            return errf(err, errlen, "the checkpoint holds %lld optimizer values, but flow '%s' has %lld parameters",
                        (long long)resume->nparams, nfc_model_name(m), (long long)P);
        }
        if (check_resume(&s, &resume->s, err, errlen)) {
            if (resume->path && err && errlen) { /* name the file */
                char *msg = strdup(err);
                if (msg) snprintf(err, errlen, "%s: %s", resume->path, msg);
                free(msg);
            }
            free(train_idx);
            free(valid_idx);
            return -1;
        }
        step0 = resume->step;
    }
    rr.total_steps = total;
    rr.steps_per_epoch = spe;
    rr.batch = B;
    rr.train_rows = ntrain;
    rr.valid_rows = nvalid;
    rr.step = step0;
    int64_t valid_every = cfg->valid_every > 0 ? cfg->valid_every : total >= spe ? spe : (total / 10 > 1 ? total / 10 : 1);

    /* buffers */
    rt_train_ckpt ck;
    memset(&ck, 0, sizeof ck);
    ck.s = s;
    ck.nparams = P;
    ck.step = step0;
    size_t pb = sizeof(double) * (size_t)(P + 1);
    double *am = big_calloc(1, pb), *av = big_calloc(1, pb), *g = big_calloc(1, pb);   /* huge pages from 2 MiB */
    double *xb = malloc(sizeof(double) * (size_t)(B * D + 1)), *cbuf = malloc(sizeof(double) * (size_t)(B * C + 1));
    int64_t *order = malloc(sizeof(int64_t) * (size_t)(ntrain + 1));
    double *vxg = NULL, *vcg = NULL, *vlp = malloc(sizeof(double) * (size_t)(nvalid + 1));
    const double *vx = data->vx, *vc = C ? data->vctx : NULL;
    rt_pool *pool = NULL;
    int64_t nblk = (P + OPT_BLOCK - 1) / OPT_BLOCK;
    opt_pass op;
    memset(&op, 0, sizeof op);
    op.P = P;
    op.cfg = cfg;
    op.model = m;
    double *sumsq = malloc(sizeof(double) * (size_t)(nblk + 1));
    op.bad = malloc((size_t)(nblk + 1));
    op.mx = malloc(sizeof(double) * (size_t)(3 * nblk + 1));
    int64_t order_epoch = -1;
    double t0 = now_s();
    if (!am || !av || !g || !xb || !cbuf || !order || !vlp || !sumsq || !op.bad || !op.mx) {
        rc = errf(err, errlen, "out of memory");
        goto done;
    }
    if (resume) {
        memcpy(am, resume->adam_m, sizeof(double) * (size_t)P);
        memcpy(av, resume->adam_v, sizeof(double) * (size_t)P);
    }
    if (!data->vx && nvalid > 0) {
        vxg = malloc(sizeof(double) * (size_t)(nvalid * D));
        vcg = C ? malloc(sizeof(double) * (size_t)(nvalid * C)) : NULL;
        if (!vxg || (C && !vcg)) { rc = errf(err, errlen, "out of memory"); goto done; }
        gather(data->x, D, valid_idx, NULL, nvalid, vxg);
        if (C) gather(data->ctx, C, valid_idx, NULL, nvalid, vcg);
        vx = vxg;
        vc = vcg;
    }
    int threads = cfg->threads > 0 ? cfg->threads : online_cpus();
    int64_t nshards = (B + shard - 1) / shard;
    if (threads > nshards) threads = (int)nshards;
    if (step0 < total) {
        pool = rt_pool_new(m, threads, err, errlen);
        if (!pool) { rc = -1; goto done; }
    }

    rt_train_progress pr;
    memset(&pr, 0, sizeof pr);
    pr.start_step = step0;
    pr.total_steps = total;
    pr.steps_per_epoch = spe;
    pr.epochs = (total + spe - 1) / spe;
    pr.batch = B;
    pr.train_rows = ntrain;
    pr.valid_rows = nvalid;
    pr.threads = threads;
    pr.valid_nll = pr.valid_bpd = pr.loss = pr.loss_avg = pr.lr = pr.grad_norm = NAN;
    pr.step = step0;
    pr.epoch = step0 == 0 ? 0 : (step0 - 1) / spe + 1;
    int stop = 0;
    if (cb && cb->progress) {
        pr.event = RT_TRAIN_BEGIN;
        stop = cb->progress(&pr, cb->user);
    }
    double wsum = 0;
    int64_t wcount = 0;
    const double ln2 = log(2.0);
    for (int64_t k = step0; k < total && !stop; k++) {
        int64_t e = k / spe, w = k % spe, S = k + 1;
        if (e != order_epoch) {
            rt_train_epoch_order(cfg->seed, e, ntrain, order);
            order_epoch = e;
        }
        gather(data->x, D, order + w * B, train_idx, B, xb);
        if (C) gather(data->ctx, C, order + w * B, train_idx, B, cbuf);
        const double *cb_ = C ? cbuf : NULL;
        if (k == 0 && !resume && cfg->actnorm_init && B >= 2 && nfc_actnorm_init(m, B, xb, cb_)) {
            rc = errf(err, errlen, "actnorm initialization on the first batch: %s", nfc_last_error(m));
            goto done;
        }
        double lsum;
        /* the mean gradient, with pass 1's finiteness and sums of squares */
        if (rt_pool_loss_grad(pool, B, xb, cb_, shard, &lsum, g, OPT_BLOCK, sumsq, op.bad, err, errlen)) {
            rc = -1;
            goto done;
        }
        double loss = lsum / (double)B;
        op.g = g;
        int gbad = 0;
        for (int64_t b = 0; b < nblk; b++) gbad |= op.bad[b];
        /* the NaN guard, before any update */
        if (!isfinite(loss) || gbad) {
            char desc[512];
            int layer = nfc_find_nonfinite(m, B, xb, cb_, desc, sizeof desc);
            rr.bad_step = S;
            rr.bad_layer = layer > 0 ? layer : 0;
            const char *what = isfinite(loss) ? "gradient" : "loss";
            if (layer < 0)
                rc = errf(err, errlen, "non-finite %s at step %lld (epoch %lld); locating it failed: %s", what, (long long)S,
                          (long long)(e + 1), nfc_last_error(m));
            else if (layer > 0 && !strcmp(desc, "the base distribution"))
                rc = errf(err, errlen, "non-finite %s at step %lld (epoch %lld): first non-finite value in the base distribution",
                          what, (long long)S, (long long)(e + 1));
            else if (layer > 0)
                rc = errf(err, errlen, "non-finite %s at step %lld (epoch %lld): first non-finite value in layer %d (%s)", what,
                          (long long)S, (long long)(e + 1), layer, desc);
            else if (!isfinite(loss))
                rc = errf(err, errlen, "non-finite loss at step %lld (epoch %lld): the forward pass is finite in f64, so the "
                          "loss overflowed in the model's precision (try --dtype f64 or a smaller --lr)", (long long)S,
                          (long long)(e + 1));
            else
                rc = errf(err, errlen, "non-finite gradient at step %lld (epoch %lld): the forward pass is finite, but the "
                          "gradient is not (first in parameter '%s'): an overflow (try a smaller --lr), or a fault of "
                          "the backend (compare --backend interp)", (long long)S,
                          (long long)(e + 1), nonfinite_param(m, g));
            goto done;
        }
        double ss = 0;
        for (int64_t b = 0; b < nblk; b++) ss += sumsq[b];
        double gnorm = sqrt(ss);
        if (cfg->clip_norm > 0 && !isfinite(gnorm)) {
            rr.bad_step = S;
            rc = errf(err, errlen, "non-finite gradient norm at step %lld (epoch %lld): the gradient overflowed", (long long)S,
                      (long long)(e + 1));
            goto done;
        }
        double lr = rt_train_lr(cfg, S, total);
        op.gscale = cfg->clip_norm > 0 && gnorm > cfg->clip_norm ? cfg->clip_norm / gnorm : 1.0;
        op.p = nfc_params(m);
        op.m = am;
        op.v = av;
        op.t = S;
        op.lr = lr;
        int ubad = 0, bounded = opt_bound(&op, nblk, gnorm);
        rr.opt_checks_skipped += bounded;
        if (!bounded || cfg->verify_bound) {   /* pass 2, unless the bound answers it */
            rt_pool_for(pool, nblk, opt_check, &op);
            for (int64_t b = 0; b < nblk; b++) ubad |= op.bad[b];
            if (bounded && ubad) {
                rc = errf(err, errlen, "internal error (verify_bound): the optimizer's bound claimed a finite update at "
                          "step %lld, but it is not", (long long)S);
                goto done;
            }
        }
        if (ubad) {
            const char *badp = (ubad & 2) ? nonfinite_update(&op, 0) : NULL, *badm = badp ? NULL : nonfinite_update(&op, 1);
            if (!badm && !badp) badm = nonfinite_update(&op, 2);
            rr.bad_step = S;
            rc = errf(err, errlen, "non-finite %s '%s' after the update of step %lld (epoch %lld); the parameters of step %lld "
                      "are kept (try a smaller --lr)", badp ? "parameter" : "optimizer state of parameter", badp ? badp : badm,
                      (long long)S, (long long)(e + 1), (long long)k);
            goto done;
        }
        rt_pool_for(pool, nblk, opt_apply, &op);
        op.mx_known = 1;
        if (cfg->verify_bound && verify_maxima(&op, nblk, err, errlen)) {
            rc = -1;
            goto done;
        }
        rr.step = S;
        ck.step = S;
        wsum += loss;
        wcount++;
        double el = now_s() - t0;
        pr.event = RT_TRAIN_STEP;
        pr.step = S;
        pr.epoch = e + 1;
        pr.loss = loss;
        pr.loss_avg = wsum / (double)wcount;
        pr.lr = lr;
        pr.grad_norm = gnorm;
        pr.elapsed_s = el;
        pr.samples_per_s = el > 0 ? (double)((S - step0) * B) / el : 0;
        rr.train_loss = pr.loss_avg;
        if (cb && cb->progress && cb->progress(&pr, cb->user)) stop = 1;
        if (!stop && (S % valid_every == 0 || S == total)) {
            double nll;
            if (validate(m, vx, vc, nvalid, vlp, &nll, err, errlen)) { rc = -1; goto done; }
            pr.valid_nll = rr.valid_nll = nll;
            pr.valid_bpd = rr.valid_bpd = nll / ((double)D * ln2);
            pr.event = RT_TRAIN_VALID;
            pr.elapsed_s = now_s() - t0;
            if (cb && cb->progress && cb->progress(&pr, cb->user)) stop = 1;
            wsum = 0;
            wcount = 0;
        }
        if (stop || (cfg->save_every > 0 && S % cfg->save_every == 0) || S == total) {
            ck.adam_m = am;
            ck.adam_v = av;
            if (cb && cb->checkpoint && cb->checkpoint(m, &ck, cb->user, err, errlen)) { rc = -1; goto done; }
        }
    }
    if (step0 == total && !stop) {
        /* a resumed run that was already complete: validate and save once more */
        double nll;
        if (validate(m, vx, vc, nvalid, vlp, &nll, err, errlen)) { rc = -1; goto done; }
        rr.valid_nll = nll;
        rr.valid_bpd = nll / ((double)D * ln2);
        ck.adam_m = am;
        ck.adam_v = av;
        if (cb && cb->checkpoint && cb->checkpoint(m, &ck, cb->user, err, errlen)) { rc = -1; goto done; }
    }
    rc = stop ? 1 : 0;
done:
    rr.elapsed_s = now_s() - t0;
    if (res) *res = rr;
    rt_pool_free(pool);
    free(am); free(av); free(g);
    free(xb); free(cbuf); free(order); free(vxg); free(vcg); free(vlp); free(sumsq); free(op.bad); free(op.mx);
    free(train_idx); free(valid_idx);
    return rc;
}

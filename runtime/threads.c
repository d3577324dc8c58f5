/* runtime/threads.c: the thread pool of the training runtime (train.h).
 *
 * Two kinds of job, both deterministic whatever the thread count and the timing:
 *
 * - rt_pool_loss_grad: a batch's loss and gradient sums. The batch is cut into shards of a
 *   fixed size, taken in rounds of T (the thread count): in a round, shard j of the round
 *   goes to some thread, which writes its sums into buffer j; then the threads add the
 *   round's buffers into the total, each over its own range of parameters, buffer 0 first.
 *   So every parameter's total is ((0 + s0) + s1) + ... in shard order, the same bits for
 *   any T; the additions run in parallel instead of one shard at a time. A shard of at most
 *   nfc_worker_rows_max() rows is one call of the compiled program, and its buffer holds the
 *   program's own output (float for f32 models): converting it is part of the addition, not
 *   a pass of its own. With a block size, the last round's addition also makes the mean and,
 *   per block, its sum of squares and finiteness (what the optimizer needs next), while the
 *   block is in cache.
 * - rt_pool_for: fn(ctx, b) for blocks b = 0 .. nblocks-1, spread over the threads; the
 *   caller makes each block's work independent of which thread runs it.
 *
 * The caller's thread is one of the T (with worker 0); the others spin briefly between jobs
 * and then sleep. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "train.h"

typedef struct {
    rt_pool    *p;
    nfc_worker *w;
    int         id;
    pthread_t   th;
} pool_thread;

enum { JOB_NONE, JOB_SHARDS, JOB_ADD, JOB_FOR };

struct rt_pool {
    pthread_mutex_t  mu;
    pthread_cond_t   work, done;
    nfc_model       *m;
    int              nt, started;   /* nt workers: t[0] is the caller's, t[1..] have threads */
    pool_thread     *t;
    _Atomic uint64_t gen;           /* job generation: a new job when it changes */
    _Atomic int      quit;
    _Atomic int      pending;       /* pool threads still working on the job */
    _Atomic int64_t  next;          /* the next item to take */
    int              job;
    int64_t          count;         /* items in the job */
    /* JOB_FOR */
    void           (*fn)(void *ctx, int64_t b);
    void            *ctx;
    /* JOB_SHARDS, JOB_ADD */
    const double    *x, *ctx_rows;
    int              D, C;
    int64_t          P, n, shard, round0;   /* round0: the first shard of the round */
    void           **buf;                   /* [nt]: the round's shard sums, esz bytes a value */
    size_t           bufbytes;              /* of each buffer */
    int              esz, raw;              /* raw: one program call a shard, its output kept */
    double          *loss;                  /* [nt]: the round's shard losses */
    int             *rc;                    /* [nt]: their status */
    double          *gsum;
    int64_t          nbuf, chunk;           /* JOB_ADD: buffers of the round, parameters an item */
    int              first, last;           /* the first (store, not add) and last round */
    double          *sumsq;                 /* last round, when set: per chunk, of the mean */
    char            *bad;                   /* last round: per chunk, 1 if a mean is not finite */
    char             err[1024];
};

/* parameters per item of JOB_ADD (without a block size): large enough that a thread streams,
 * small enough to share */
#define ADD_CHUNK 8192
/* A pool thread spins this long for the next job before it sleeps: a training step is a few
 * jobs separated by microseconds of serial work, and a sleep/wake-up costs tens of them. */
#define SPIN_NS 100000

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* one step of a spin wait; now and then it yields the core, in case the thread it waits
 * for shares it (more threads than free cores) */
static void spin_step(int i) {
    if ((i & 63) == 63) sched_yield();
    else cpu_relax();
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* g[i] (+)= b[i] for one buffer of the round: stored for the first (0 + b: the bits of the
 * sum of one shard), added for the others */
RT_PARAM_LOOP static void add_buf(double *restrict g, const void *b, int esz, int store, int64_t n) {
    if (esz == 4) {
        const float *restrict f = b;
        if (store) for (int64_t i = 0; i < n; i++) g[i] = 0.0 + (double)f[i];
        else for (int64_t i = 0; i < n; i++) g[i] += (double)f[i];
    } else {
        const double *restrict d = b;
        if (store) for (int64_t i = 0; i < n; i++) g[i] = 0.0 + d[i];
        else for (int64_t i = 0; i < n; i++) g[i] += d[i];
    }
}

/* g[i] /= B over one block; returns its sum of squares (eight partial sums, added in a fixed
 * order at the end: the same bits for every vector width) and sets *bad when a value is not
 * finite (tested on the bits, so that the loop vectorizes) */
RT_PARAM_LOOP static double mean_block(double *restrict g, int64_t n, double B, char *bad) {
    double s[8] = { 0 };
    uint64_t nf = 0;
    int64_t i;
    for (i = 0; i < n; i++) {
        double v = g[i] / B;
        uint64_t u;
        memcpy(&u, &v, sizeof u);
        g[i] = v;
        nf |= (u & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
    }
    for (i = 0; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) s[l] += g[i + l] * g[i + l];
    for (; i < n; i++) s[i & 7] += g[i] * g[i];
    *bad = (char)(nf != 0);
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static void run_item(rt_pool *p, pool_thread *me, int64_t k) {
    if (p->job == JOB_FOR) {
        p->fn(p->ctx, k);
    } else if (p->job == JOB_SHARDS) {
        int64_t s = p->round0 + k;   /* shard s of the batch, buffer k of the round */
        int64_t r0 = s * p->shard, c = p->n - r0 < p->shard ? p->n - r0 : p->shard;
        const double *x = p->x + r0 * p->D, *ctx = p->ctx_rows ? p->ctx_rows + r0 * p->C : NULL;
        double ls = 0;
        p->rc[k] = p->raw ? nfc_worker_loss_grad_raw(me->w, c, x, ctx, &ls, p->buf[k])
                          : nfc_worker_loss_grad(me->w, c, x, ctx, &ls, p->buf[k]);
        p->loss[k] = ls;
        if (p->rc[k]) {
            pthread_mutex_lock(&p->mu);
            if (!p->err[0]) snprintf(p->err, sizeof p->err, "%s", nfc_worker_error(me->w));
            pthread_mutex_unlock(&p->mu);
        }
    } else if (p->job == JOB_ADD) {
        int64_t i0 = k * p->chunk, i1 = i0 + p->chunk < p->P ? i0 + p->chunk : p->P;
        for (int64_t j = 0; j < p->nbuf; j++)
            add_buf(p->gsum + i0, (const char *)p->buf[j] + (size_t)i0 * (size_t)p->esz, p->esz, p->first && j == 0,
                    i1 - i0);
        if (p->last && p->sumsq) p->sumsq[k] = mean_block(p->gsum + i0, i1 - i0, (double)p->n, &p->bad[k]);
    }
}

static void take_items(rt_pool *p, pool_thread *me) {
    for (;;) {
        int64_t k = atomic_fetch_add(&p->next, 1);
        if (k >= p->count) break;
        run_item(p, me, k);
    }
}

static void *thread_main(void *arg) {
    pool_thread *me = arg;
    rt_pool *p = me->p;
    uint64_t seen = 0;
    for (;;) {
        int64_t t0 = now_ns();
        for (int i = 0; atomic_load(&p->gen) == seen && !atomic_load(&p->quit); i++) {
            spin_step(i);
            if ((i & 255) == 255 && now_ns() - t0 > SPIN_NS) {
                pthread_mutex_lock(&p->mu);
                while (atomic_load(&p->gen) == seen && !atomic_load(&p->quit)) pthread_cond_wait(&p->work, &p->mu);
                pthread_mutex_unlock(&p->mu);
            }
        }
        if (atomic_load(&p->quit)) break;
        seen = atomic_load(&p->gen);
        take_items(p, me);
        if (atomic_fetch_sub(&p->pending, 1) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

/* runs `count` items of the job on the pool threads and the caller's, and waits for them */
static void run_job(rt_pool *p, int job, int64_t count) {
    if (count <= 0) return;
    p->job = job;
    p->count = count;
    atomic_store(&p->next, 0);
    atomic_store(&p->pending, p->nt - 1);
    if (p->nt > 1) {
        pthread_mutex_lock(&p->mu);
        atomic_fetch_add(&p->gen, 1);
        pthread_cond_broadcast(&p->work);
        pthread_mutex_unlock(&p->mu);
    }
    take_items(p, &p->t[0]);
    int64_t t0 = now_ns();
    for (int i = 0; atomic_load(&p->pending) > 0; i++) {
        spin_step(i);
        if ((i & 255) == 255 && now_ns() - t0 > SPIN_NS) {
            pthread_mutex_lock(&p->mu);
            while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
    }
    p->job = JOB_NONE;
}

void rt_pool_free(rt_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, 1);
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i <= p->started; i++) pthread_join(p->t[i].th, NULL);
    for (int i = 0; i < p->nt; i++) {
        nfc_worker_free(p->t[i].w);
        if (p->buf) free(p->buf[i]);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    free(p->buf);
    free(p->loss);
    free(p->rc);
    free(p->t);
    free(p);
}

rt_pool *rt_pool_new(nfc_model *m, int threads, char *err, size_t errlen) {
    if (threads < 1) threads = 1;
    rt_pool *p = calloc(1, sizeof *p);
    if (!p) { snprintf(err, errlen, "out of memory"); return NULL; }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    p->m = m;
    p->D = m ? nfc_model_dim(m) : 0;
    p->C = m ? nfc_model_context_dim(m) : 0;
    p->P = m ? nfc_param_total(m) : 0;
    p->t = calloc((size_t)threads, sizeof *p->t);
    p->buf = calloc((size_t)threads, sizeof *p->buf);
    p->loss = calloc((size_t)threads, sizeof *p->loss);
    p->rc = calloc((size_t)threads, sizeof *p->rc);
    if (!p->t || !p->buf || !p->loss || !p->rc) { snprintf(err, errlen, "out of memory"); rt_pool_free(p); return NULL; }
    p->nt = threads;
    /* workers are made here, on one thread: the first builds the gradient program */
    for (int i = 0; i < threads; i++) {
        p->t[i].p = p;
        p->t[i].id = i;
        if (!m) continue;
        p->t[i].w = nfc_worker_new(m);
        if (!p->t[i].w) { snprintf(err, errlen, "%s", nfc_last_error(m)); rt_pool_free(p); return NULL; }
    }
    for (int i = 1; i < threads; i++) {
        int e = pthread_create(&p->t[i].th, NULL, thread_main, &p->t[i]);
        if (e) {
            snprintf(err, errlen, "cannot start thread %d of %d: %s", i + 1, threads, strerror(e));
            rt_pool_free(p);
            return NULL;
        }
        p->started++;
    }
    return p;
}

int rt_pool_threads(const rt_pool *p) { return p->nt; }

void rt_pool_for(rt_pool *p, int64_t nblocks, void (*fn)(void *ctx, int64_t b), void *ctx) {
    p->fn = fn;
    p->ctx = ctx;
    run_job(p, JOB_FOR, nblocks);
}

int rt_pool_loss_grad(rt_pool *p, int64_t n, const double *x, const double *ctx, int64_t shard, double *loss_sum,
                      double *grad, int64_t block, double *sumsq, char *bad, char *err, size_t errlen) {
    if (!p->m) { snprintf(err, errlen, "a thread pool made without a model has no workers"); return -1; }
    if (n < 1 || shard < 1) { snprintf(err, errlen, "empty batch"); return -1; }
    p->raw = shard <= nfc_worker_rows_max();
    p->esz = p->raw ? nfc_grad_elem_size(p->m) : (int)sizeof(double);
    size_t need = (size_t)p->esz * (size_t)(p->P + 1);
    if (need > p->bufbytes) {   /* the buffers, on the first call (again if the shards grow) */
        for (int i = 0; i < p->nt; i++) {
            free(p->buf[i]);
            p->buf[i] = malloc(need);
        }
        p->bufbytes = need;
        for (int i = 0; i < p->nt; i++)
            if (!p->buf[i]) { p->bufbytes = 0; snprintf(err, errlen, "out of memory"); return -1; }
    }
    p->x = x;
    p->ctx_rows = ctx;
    p->n = n;
    p->shard = shard;
    p->gsum = grad;
    p->chunk = block > 0 ? block : ADD_CHUNK;
    p->sumsq = block > 0 ? sumsq : NULL;
    p->bad = bad;
    p->err[0] = 0;
    int64_t nshards = (n + shard - 1) / shard;
    double lsum = 0;
    for (int64_t s0 = 0; s0 < nshards; s0 += p->nt) {
        int64_t k = nshards - s0 < p->nt ? nshards - s0 : p->nt;
        p->round0 = s0;
        run_job(p, JOB_SHARDS, k);
        for (int64_t j = 0; j < k; j++)
            if (p->rc[j]) {
                snprintf(err, errlen, "%s", p->err[0] ? p->err : "a shard failed");
                return -1;
            }
        for (int64_t j = 0; j < k; j++) lsum += p->loss[j];
        p->nbuf = k;
        p->first = s0 == 0;
        p->last = s0 + k >= nshards;
        run_job(p, JOB_ADD, (p->P + p->chunk - 1) / p->chunk);
    }
    *loss_sum = lsum;
    return 0;
}

/* bench/peak_flops.c: the machine's fp32 FMA throughput, measured (the denominator of the
 * "fraction of peak" column of bench/run).
 *
 *   peak_flops [--threads T] [--time S]
 *
 * Each of T threads runs a loop of 12 independent FMA chains per vector register width
 * (AVX-512: 16 floats; otherwise AVX2+FMA: 8), enough to cover the FMA latency (4 cycles)
 * times two FMA ports. Counts 2 FLOPs per lane per FMA. Prints "gflops_1 X" (one thread)
 * and "gflops_T X" (T threads at once), each the best of 3 runs of about S seconds.
 * Built with -O2 -march=native. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define CHAINS 12
#define INNER 1000

#if defined(__AVX512F__)
#define LANES 16
typedef __m512 vec;
#define VSET1 _mm512_set1_ps
#define VFMA _mm512_fmadd_ps
#define VADD _mm512_add_ps
#define VSTORE _mm512_storeu_ps
#define ISA "avx512f"
#elif defined(__AVX2__) && defined(__FMA__)
#define LANES 8
typedef __m256 vec;
#define VSET1 _mm256_set1_ps
#define VFMA _mm256_fmadd_ps
#define VADD _mm256_add_ps
#define VSTORE _mm256_storeu_ps
#define ISA "avx2+fma"
#else
#error "peak_flops needs AVX2+FMA or AVX-512F (build with -march=native)"
#endif

static volatile float sink;

/* iters * INNER * CHAINS FMAs of LANES lanes. The chains are 12 named variables, not an array:
 * with an array, gcc -O2 kept the accumulators in memory (a load and a store per FMA), which
 * measured about half the real peak. */
static void kernel(long iters, float seed) {
    vec a0 = VSET1(seed), a1 = VSET1(seed + 1), a2 = VSET1(seed + 2), a3 = VSET1(seed + 3);
    vec a4 = VSET1(seed + 4), a5 = VSET1(seed + 5), a6 = VSET1(seed + 6), a7 = VSET1(seed + 7);
    vec a8 = VSET1(seed + 8), a9 = VSET1(seed + 9), a10 = VSET1(seed + 10), a11 = VSET1(seed + 11);
    vec a = VSET1(0.999999f), b = VSET1(1e-7f);
    for (long i = 0; i < iters * INNER; i++) {
        a0 = VFMA(a0, a, b); a1 = VFMA(a1, a, b); a2 = VFMA(a2, a, b); a3 = VFMA(a3, a, b);
        a4 = VFMA(a4, a, b); a5 = VFMA(a5, a, b); a6 = VFMA(a6, a, b); a7 = VFMA(a7, a, b);
        a8 = VFMA(a8, a, b); a9 = VFMA(a9, a, b); a10 = VFMA(a10, a, b); a11 = VFMA(a11, a, b);
        __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7),
                         "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11));
    }
    vec s = VADD(VADD(VADD(a0, a1), VADD(a2, a3)), VADD(VADD(a4, a5), VADD(a6, a7)));
    s = VADD(s, VADD(VADD(a8, a9), VADD(a10, a11)));
    float out[LANES];
    VSTORE(out, s);
    sink = out[0];
}

typedef struct {
    long iters;
    pthread_barrier_t *bar;
    double t;
} job;

static void *run(void *p) {
    job *j = p;
    pthread_barrier_wait(j->bar);
    double t0 = now_s();
    kernel(j->iters, 1.0f);
    j->t = now_s() - t0;
    return NULL;
}

/* GFLOP/s of T threads running iters each, best of 3 */
static double measure(int T, long iters) {
    double best = 0;
    for (int r = 0; r < 3; r++) {
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, (unsigned)T);
        pthread_t th[256];
        job j[256];
        for (int i = 0; i < T; i++) {
            j[i].iters = iters;
            j[i].bar = &bar;
            pthread_create(&th[i], NULL, run, &j[i]);
        }
        double tmax = 0;
        for (int i = 0; i < T; i++) {
            pthread_join(th[i], NULL);
            if (j[i].t > tmax) tmax = j[i].t;
        }
        pthread_barrier_destroy(&bar);
        double g = (double)T * (double)iters * INNER * CHAINS * LANES * 2 / tmax * 1e-9;
        if (g > best) best = g;
    }
    return best;
}

int main(int argc, char **argv) {
    int T = 2;
    double target = 0.3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--time") && i + 1 < argc) target = atof(argv[++i]);
        else { fprintf(stderr, "usage: peak_flops [--threads T] [--time S]\n"); return 2; }
    }
    if (T < 1 || T > 256) return 2;
    /* calibrate on one thread */
    double t0 = now_s();
    kernel(100, 1.0f);
    double per = (now_s() - t0) / 100;
    long iters = (long)(target / (per > 0 ? per : 1e-6));
    if (iters < 10) iters = 10;
    printf("isa %s\n", ISA);
    printf("gflops_1 %.2f\n", measure(1, iters));
    printf("gflops_T %.2f\n", measure(T, iters));
    printf("threads %d\n", T);
    return 0;
}

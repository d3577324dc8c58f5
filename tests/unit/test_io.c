/* tests/unit/test_io.c: unit tests for the runtime's data and checkpoint I/O (runtime/rt_io.h).
 *
 * Input:  none; every file is made under a fresh mkdtemp directory that is removed at the end.
 * Output: one "PASS name" / "FAIL name" line per test (tests/t.h); exit status 1 on failure.
 *
 * Covers round trips (NPY, CSV, safetensors; f32 and f64; bit-exact), every documented error
 * with a distinctive part of its message, truncation of valid files at every length, random
 * byte mutations (run under ASan/UBSan these catch out-of-bounds reads and leaks), and atomic
 * writes that leave the old file intact when the directory is unwritable or PATH is a directory.
 * Parsers are always given exact-size heap copies so that any over-read is caught.
 */
#include "rt_io.h"
#include "t.h"

#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <ftw.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[256];   /* the test directory, set once in main */

static const char *tpath(char *buf, size_t len, const char *name) {
    snprintf(buf, len, "%s/%s", tmpdir, name);
    return buf;
}

static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    if (fwrite(p, 1, n, f) != n) {
        fclose(f);
        return -1;
    }
    return fclose(f);
}

/* The whole file, malloc'ed (NULL if unreadable). */
static unsigned char *read_bytes(const char *path, size_t *n) {
    unsigned char *buf;
    char err[256];
    if (rt_io_read_file(path, &buf, n, err, sizeof err))
        return NULL;
    return buf;
}

/* Number of directory entries whose name contains ".tmp." (left-over temp files). */
static int count_tmp(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp."))
            n++;
    closedir(d);
    return n;
}

static uint64_t rnd(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

static int has(const unsigned char *b, size_t n, const char *s) {
    return memmem(b, n, s, strlen(s)) != NULL;
}

static int same_bits(double a, double b) {
    return memcmp(&a, &b, sizeof a) == 0;
}

static void put_le(unsigned char *p, uint64_t v, int n) {
    int i;
    for (i = 0; i < n; i++, v >>= 8)
        p[i] = (unsigned char)(v & 0xff);
}

static void put_f64(unsigned char *p, double x) {
    uint64_t u;
    memcpy(&u, &x, 8);
    put_le(p, u, 8);
}

static void put_f32(unsigned char *p, float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    put_le(p, u, 4);
}

/* ---- parsers on exact-size heap copies ---- */

static int npy_parse_copy(const void *bytes, size_t len, rt_array *a, char *err, size_t errlen) {
    unsigned char *b = malloc(len ? len : 1);
    int rc;
    if (len)
        memcpy(b, bytes, len);
    rc = rt_npy_parse("data.npy", b, len, a, err, errlen);
    free(b);
    return rc;
}

static int csv_parse_copy(const char *text, size_t len, rt_array *a, char *err, size_t errlen) {
    char *b = malloc(len ? len : 1);
    int rc;
    if (len)
        memcpy(b, text, len);
    rc = rt_csv_parse("data.csv", b, len, a, err, errlen);
    free(b);
    return rc;
}

static int st_parse_copy(const void *bytes, size_t len, rt_tensorfile *f, char *err, size_t errlen) {
    unsigned char *b = malloc(len ? len : 1);
    int rc;
    if (len)
        memcpy(b, bytes, len);
    rc = rt_st_parse("model.safetensors", b, len, f, err, errlen);
    free(b);
    return rc;
}

/* An NPY file: magic, version major.0, header length (2 or 4 bytes), dict, data. */
static size_t mk_npy(unsigned char *out, int major, const char *dict, const void *data, size_t dlen) {
    size_t n, hl = strlen(dict);
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (unsigned char)major;
    out[7] = 0;
    if (major == 1) {
        put_le(out + 8, hl, 2);
        n = 10;
    } else {
        put_le(out + 8, hl, 4);
        n = 12;
    }
    memcpy(out + n, dict, hl);
    n += hl;
    if (dlen)
        memcpy(out + n, data, dlen);
    return n + dlen;
}

/* A safetensors file: 8-byte size, JSON header, data; malloc'ed. */
static unsigned char *mk_st(const char *json, const void *data, size_t dlen, size_t *len) {
    size_t hl = strlen(json);
    unsigned char *b = malloc(8 + hl + dlen + 1);
    put_le(b, hl, 8);
    memcpy(b + 8, json, hl);
    if (dlen)
        memcpy(b + 8 + hl, data, dlen);
    *len = 8 + hl + dlen;
    return b;
}

/* Expect the parse to fail with sub in a message that starts with "prefix". */
static void expect_npy_err(const void *bytes, size_t len, const char *sub, int line) {
    rt_array a;
    char err[512] = "";
    int rc = npy_parse_copy(bytes, len, &a, err, sizeof err);
    CHECK(rc == -1, "line %d: parse succeeded, wanted '%s'", line, sub);
    CHECK(a.data == NULL && a.shape[0] == 0, "line %d: output not cleared", line);
    CHECK(strstr(err, sub) != NULL, "line %d: want '%s' in '%s'", line, sub, err);
    CHECK(strncmp(err, "data.npy: ", 10) == 0, "line %d: no file name in '%s'", line, err);
    if (rc == 0)
        rt_array_free(&a);
}
#define NPY_ERR(bytes, len, sub) expect_npy_err(bytes, len, sub, __LINE__)

static void expect_csv_err(const char *text, const char *sub, int line) {
    rt_array a;
    char err[512] = "";
    int rc = csv_parse_copy(text, strlen(text), &a, err, sizeof err);
    CHECK(rc == -1, "line %d: parse succeeded, wanted '%s'", line, sub);
    CHECK(a.data == NULL, "line %d: output not cleared", line);
    CHECK(strstr(err, sub) != NULL, "line %d: want '%s' in '%s'", line, sub, err);
    CHECK(strncmp(err, "data.csv:", 9) == 0, "line %d: no file name in '%s'", line, err);
    if (rc == 0)
        rt_array_free(&a);
}
#define CSV_ERR(text, sub) expect_csv_err(text, sub, __LINE__)

static void expect_st_err(const char *json, const void *data, size_t dlen, const char *sub, int line) {
    rt_tensorfile f;
    char err[512] = "";
    size_t len;
    unsigned char *b = mk_st(json, data, dlen, &len);
    int rc = st_parse_copy(b, len, &f, err, sizeof err);
    free(b);
    CHECK(rc == -1, "line %d: parse succeeded, wanted '%s'", line, sub);
    CHECK(f.n == 0 && f.t == NULL && f.nmeta == 0 && f.meta_keys == NULL, "line %d: output not cleared", line);
    CHECK(strstr(err, sub) != NULL, "line %d: want '%s' in '%s'", line, sub, err);
    CHECK(strncmp(err, "model.safetensors: ", 19) == 0, "line %d: no file name in '%s'", line, err);
    if (rc == 0)
        rt_st_free(&f);
}
#define ST_ERR(json, data, dlen, sub) expect_st_err(json, data, dlen, sub, __LINE__)

/* Parse a hand-made safetensors file that must be valid. */
static int st_ok(const char *json, const void *data, size_t dlen, rt_tensorfile *f, int line) {
    char err[512] = "";
    size_t len;
    unsigned char *b = mk_st(json, data, dlen, &len);
    int rc = st_parse_copy(b, len, f, err, sizeof err);
    free(b);
    CHECK(rc == 0, "line %d: %s", line, err);
    return rc;
}
#define ST_OK(json, data, dlen, f) st_ok(json, data, dlen, f, __LINE__)

/* ---- NPY ---- */

static const double f64_vals[6] = {0.1, -0.0, 5e-324, DBL_MAX, 1.0 / 3.0, -1e300};

TEST(npy_roundtrip_f64) {
    char p[512], err[512] = "";
    rt_array a;
    int i;
    CHECK(rt_write_data(tpath(p, sizeof p, "a64.npy"), f64_vals, 3, 2, RT_F64, err, sizeof err) == 0, "%s", err);
    CHECK(rt_read_data(p, &a, err, sizeof err) == 0, "%s", err);
    CHECK(a.dtype == RT_F64 && a.ndim == 2 && a.shape[0] == 3 && a.shape[1] == 2);
    for (i = 0; a.data && i < 6; i++)
        CHECK(same_bits(a.data[i], f64_vals[i]), "value %d: %.17g vs %.17g", i, a.data[i], f64_vals[i]);
    rt_array_free(&a);
    CHECK(a.data == NULL);
    CHECK(count_tmp(tmpdir) == 0);
}

TEST(npy_roundtrip_f32) {
    const double v[4] = {0.5, -1.25, (double)0.1f, (double)FLT_MAX};
    char p[512], err[512] = "";
    unsigned char *b;
    size_t n, hlen;
    rt_array a;
    int i;
    CHECK(rt_write_data(tpath(p, sizeof p, "a32.npy"), v, 4, 1, RT_F32, err, sizeof err) == 0, "%s", err);
    CHECK(rt_read_data(p, &a, err, sizeof err) == 0, "%s", err);
    CHECK(a.dtype == RT_F32 && a.ndim == 2 && a.shape[0] == 4 && a.shape[1] == 1);
    for (i = 0; a.data && i < 4; i++)
        CHECK(same_bits(a.data[i], v[i]), "value %d: %.17g vs %.17g", i, a.data[i], v[i]);
    rt_array_free(&a);

    /* the layout: v1.0, header padded so the data starts at a multiple of 64 */
    b = read_bytes(p, &n);
    CHECK(b != NULL);
    if (!b)
        return;
    CHECK(memcmp(b, "\x93NUMPY\x01\x00", 8) == 0);
    hlen = (size_t)b[8] | (size_t)b[9] << 8;
    CHECK((10 + hlen) % 64 == 0, "header length %zu", hlen);
    CHECK(n == 10 + hlen + 16, "file size %zu", n);
    CHECK(b[10 + hlen - 1] == '\n');
    CHECK(has(b, n, "'descr': '<f4'"));
    CHECK(has(b, n, "'shape': (4, 1)"));
    CHECK(has(b, n, "'fortran_order': False"));
    free(b);
}

TEST(npy_versions_and_1d) {
    unsigned char buf[512], data[24];
    char err[512] = "";
    rt_array a;
    size_t n;
    int v;
    put_f64(data, 1.5), put_f64(data + 8, -2), put_f64(data + 16, 3e10);
    for (v = 1; v <= 3; v++) {
        n = mk_npy(buf, v, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }          \n", data, 24);
        CHECK(npy_parse_copy(buf, n, &a, err, sizeof err) == 0, "version %d: %s", v, err);
        CHECK(a.ndim == 1 && a.shape[0] == 3 && a.shape[1] == 1 && a.dtype == RT_F64, "version %d", v);
        CHECK(a.data && a.data[0] == 1.5 && a.data[1] == -2 && a.data[2] == 3e10);
        rt_array_free(&a);
    }
    /* other key order, double quotes, Python 2 longs, no trailing comma, an extra key */
    put_f32(data, 7.25f), put_f32(data + 4, -8);
    n = mk_npy(buf, 1, "{\"shape\": (1L, 2L), \"fortran_order\": False, \"descr\": \"<f4\", 'extra': (1, 2)}", data, 8);
    CHECK(npy_parse_copy(buf, n, &a, err, sizeof err) == 0, "%s", err);
    CHECK(a.ndim == 2 && a.shape[0] == 1 && a.shape[1] == 2 && a.dtype == RT_F32);
    CHECK(a.data && a.data[0] == 7.25 && a.data[1] == -8);
    rt_array_free(&a);
}

TEST(npy_errors) {
    unsigned char buf[2048], data[800];
    size_t n;
    double nan = NAN, inf = INFINITY;
    int i;

    memset(data, 0, sizeof data);
    NPY_ERR("", 0, "file is empty");
    NPY_ERR("PK\x03\x04zipfile", 11, "not an NPY file (bad magic");
    NPY_ERR("\x93NUMPY\x01", 7, "truncated");
    n = mk_npy(buf, 4, "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", data, 8);
    NPY_ERR(buf, n, "unsupported NPY version 4.0");
    n = mk_npy(buf, 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }", data, 8);
    NPY_ERR(buf, n, "data.npy: unsupported dtype '<i4' (expected '<f4' or '<f8')");
    n = mk_npy(buf, 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (2,), }", data, 2);
    NPY_ERR(buf, n, "unsupported dtype '|u1'");
    n = mk_npy(buf, 1, "{'descr': '>f8', 'fortran_order': False, 'shape': (1,), }", data, 8);
    NPY_ERR(buf, n, "big-endian dtype '>f8' is not supported");
    n = mk_npy(buf, 1, "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (1,), }", data, 8);
    NPY_ERR(buf, n, "structured arrays are not supported");
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }", data, 32);
    NPY_ERR(buf, n, "Fortran order is not supported; save with C order");
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': Maybe, 'shape': (1,), }", data, 8);
    NPY_ERR(buf, n, "'fortran_order' must be True or False");
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }", data, 8);
    NPY_ERR(buf, n, "0-d arrays are not supported");
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2, 2), }", data, 64);
    NPY_ERR(buf, n, "3-d arrays are not supported");
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (-1, 2), }", data, 16);
    NPY_ERR(buf, n, "negative number in the shape");
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (0, 2), }", data, 0);
    NPY_ERR(buf, n, "zero rows");
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 0), }", data, 0);
    NPY_ERR(buf, n, "zero columns");
    n = mk_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (100, 2), }", data, 640);
    NPY_ERR(buf, n, "data.npy: file is truncated: header says 100x2 values (800 bytes) but 640 bytes follow");
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (100,), }", data, 8);
    NPY_ERR(buf, n, "header says 100 values (800 bytes) but 8 bytes follow");
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", data, 16);
    NPY_ERR(buf, n, "8 unexpected bytes after the data");
    /* shapes whose byte size overflows 64 bits */
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 4), }", data, 8);
    NPY_ERR(buf, n, "is too large");
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (9223372036854775807, 9223372036854775807), }", data, 8);
    NPY_ERR(buf, n, "is too large");
    n = mk_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2305843009213693952,), }", data, 8);
    NPY_ERR(buf, n, "is too large");
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }", data, 8);
    NPY_ERR(buf, n, "number too large");
    /* a huge but representable shape is a truncation, not an allocation */
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 1000), }", data, 8);
    NPY_ERR(buf, n, "file is truncated: header says 1000000000000x1000 values (8000000000000000 bytes)");
    /* malformed headers */
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", data, 8);
    buf[8] = 0xff, buf[9] = 0x7f;   /* header length beyond the file */
    NPY_ERR(buf, n, "header length is 32767 bytes but only");
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False}", data, 8);
    NPY_ERR(buf, n, "NPY header lacks 'shape'");
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), } x", data, 8);
    NPY_ERR(buf, n, "unexpected text after the dictionary");
    n = mk_npy(buf, 1, "{'descr' '<f8', 'fortran_order': False, 'shape': (1,), }", data, 8);
    NPY_ERR(buf, n, "malformed NPY header at header byte 9: expected ':'");
    n = mk_npy(buf, 1, "{'descr': '<f8, 'fortran_order': False, 'shape': (1,), }", data, 8);
    NPY_ERR(buf, n, "malformed NPY header");
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1,", data, 8);
    NPY_ERR(buf, n, "malformed NPY header");
    n = mk_npy(buf, 1, "{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (1,)}", data, 8);
    NPY_ERR(buf, n, "duplicate key 'descr'");
    n = mk_npy(buf, 1, "", data, 8);
    NPY_ERR(buf, n, "expected '{'");

    /* NaN and Inf are named by position */
    for (i = 0; i < 8; i++)
        put_f64(data + 8 * i, i);
    put_f64(data + 8 * 7, nan);   /* row 3, column 1 of a 4x2 array */
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4, 2), }", data, 64);
    NPY_ERR(buf, n, "data.npy: value at row 3, column 1 (counting from 0) is NaN");
    put_f32(data, 1), put_f32(data + 4, 2), put_f32(data + 8, (float)inf);
    n = mk_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", data, 12);
    NPY_ERR(buf, n, "value at index 2 (counting from 0) is Inf");
    put_f32(data + 8, (float)-inf);
    n = mk_npy(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", data, 12);
    NPY_ERR(buf, n, "is -Inf");
}

/* Every proper prefix of a valid file must be rejected, cleanly. */
TEST(npy_truncations) {
    char p[512], err[512] = "";
    unsigned char *b, buf[256], data[16];
    size_t n, k;
    rt_array a;
    int v, bad = 0;
    CHECK(rt_write_data(tpath(p, sizeof p, "t.npy"), f64_vals, 2, 3, RT_F64, err, sizeof err) == 0, "%s", err);
    b = read_bytes(p, &n);
    CHECK(b != NULL);
    if (!b)
        return;
    for (k = 0; k < n; k++) {
        int rc = npy_parse_copy(b, k, &a, err, sizeof err);
        if (rc != -1 || a.data != NULL || strncmp(err, "data.npy: ", 10) != 0)
            bad++;
        if (rc == 0)
            rt_array_free(&a);
    }
    CHECK(bad == 0, "%d prefixes were not rejected cleanly", bad);
    CHECK(npy_parse_copy(b, n, &a, err, sizeof err) == 0, "%s", err);
    rt_array_free(&a);
    free(b);

    put_f64(data, 1), put_f64(data + 8, 2);
    for (v = 2; v <= 3; v++) {
        n = mk_npy(buf, v, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", data, 16);
        for (k = 0, bad = 0; k < n; k++) {
            int rc = npy_parse_copy(buf, k, &a, err, sizeof err);
            if (rc != -1 || a.data != NULL)
                bad++;
            if (rc == 0)
                rt_array_free(&a);
        }
        CHECK(bad == 0, "version %d: %d prefixes were not rejected", v, bad);
    }
}

/* Random byte changes: whatever the parser says, it must not crash or leak. */
TEST(npy_mutations) {
    unsigned char buf[256], data[48], m[256];
    char err[256];
    uint64_t s = 12345;
    size_t n;
    rt_array a;
    int i, k, ok = 0;
    for (i = 0; i < 6; i++)
        put_f64(data + 8 * i, i * 0.5);
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }", data, 48);
    for (i = 0; i < 20000; i++) {
        int nmut = 1 + (int)(rnd(&s) % 4);
        size_t len = n;
        memcpy(m, buf, n);
        for (k = 0; k < nmut; k++) {
            size_t pos = rnd(&s) % (rnd(&s) % 2 ? 80 : n);   /* mostly the header */
            m[pos] = (unsigned char)rnd(&s);
        }
        if (rnd(&s) % 4 == 0)
            len = rnd(&s) % (n + 1);
        if (npy_parse_copy(m, len, &a, err, sizeof err) == 0) {
            ok++;
            CHECK(a.data != NULL && a.shape[0] * a.shape[1] > 0);
            rt_array_free(&a);
        } else {
            CHECK(a.data == NULL && strncmp(err, "data.npy: ", 10) == 0, "%s", err);
        }
    }
    CHECK(ok > 0, "no mutation parsed");
}

/* ---- CSV ---- */

TEST(csv_roundtrip) {
    const double v32[4] = {0.5, -1.25, (double)0.1f, 3e-40};
    char p[512], err[512] = "";
    unsigned char *b;
    size_t n;
    rt_array a;
    int i;

    CHECK(rt_write_data(tpath(p, sizeof p, "r64.csv"), f64_vals, 2, 3, RT_F64, err, sizeof err) == 0, "%s", err);
    CHECK(rt_read_data(p, &a, err, sizeof err) == 0, "%s", err);
    CHECK(a.dtype == RT_F64 && a.ndim == 2 && a.shape[0] == 2 && a.shape[1] == 3);
    for (i = 0; a.data && i < 6; i++)
        CHECK(same_bits(a.data[i], f64_vals[i]), "value %d: %.17g vs %.17g", i, a.data[i], f64_vals[i]);
    rt_array_free(&a);

    /* f32: written with %.9g, which rounds back to the same float */
    CHECK(rt_write_data(tpath(p, sizeof p, "r32.txt"), v32, 4, 1, RT_F32, err, sizeof err) == 0, "%s", err);
    b = read_bytes(p, &n);
    CHECK(b && n > 9 && memcmp(b, "0.5\n-1.25\n0.100000001\n", 22) == 0, "%.*s", (int)n, b ? (char *)b : "");
    free(b);
    CHECK(rt_read_data(p, &a, err, sizeof err) == 0, "%s", err);
    CHECK(a.shape[0] == 4 && a.shape[1] == 1);
    for (i = 0; a.data && i < 4; i++)
        CHECK((float)a.data[i] == (float)v32[i], "value %d: %.9g vs %.9g", i, a.data[i], v32[i]);
    CHECK(a.data && same_bits(a.data[0], 0.5) && same_bits(a.data[1], -1.25));
    rt_array_free(&a);
    CHECK(count_tmp(tmpdir) == 0);
}

TEST(csv_accepts) {
    char err[512] = "";
    rt_array a;
    const char *t;

    t = "x, y\n1,2\n3,4\n";   /* a header */
    CHECK(csv_parse_copy(t, strlen(t), &a, err, sizeof err) == 0, "%s", err);
    CHECK(a.shape[0] == 2 && a.shape[1] == 2 && a.data && a.data[3] == 4);
    rt_array_free(&a);

    t = "x,1\n1,2\n";          /* one non-number field is enough */
    CHECK(csv_parse_copy(t, strlen(t), &a, err, sizeof err) == 0, "%s", err);
    CHECK(a.shape[0] == 1 && a.data && a.data[0] == 1 && a.data[1] == 2);
    rt_array_free(&a);

    t = "a,b\r\n1.5,-2e3\r\n\r\n3,4\r\n";   /* CRLF and a blank CRLF line */
    CHECK(csv_parse_copy(t, strlen(t), &a, err, sizeof err) == 0, "%s", err);
    CHECK(a.shape[0] == 2 && a.data && a.data[0] == 1.5 && a.data[1] == -2e3 && a.data[3] == 4);
    rt_array_free(&a);

    t = "# comment\n\n  # indented comment\n 1 ,\t2\t\n   \n3 , 4";   /* spaces, no final newline */
    CHECK(csv_parse_copy(t, strlen(t), &a, err, sizeof err) == 0, "%s", err);
    CHECK(a.shape[0] == 2 && a.shape[1] == 2 && a.data && a.data[1] == 2 && a.data[2] == 3);
    rt_array_free(&a);

    t = "1\n2\n3\n";           /* one column */
    CHECK(csv_parse_copy(t, strlen(t), &a, err, sizeof err) == 0, "%s", err);
    CHECK(a.ndim == 2 && a.shape[0] == 3 && a.shape[1] == 1 && a.data && a.data[2] == 3);
    rt_array_free(&a);

    t = "\xEF\xBB\xBFx\n0.25\n";   /* a UTF-8 byte order mark */
    CHECK(csv_parse_copy(t, strlen(t), &a, err, sizeof err) == 0, "%s", err);
    CHECK(a.shape[0] == 1 && a.data && a.data[0] == 0.25);
    rt_array_free(&a);

    t = "# made by a tool\nx,y\n1,2\n";   /* the header is the first record, after comments */
    CHECK(csv_parse_copy(t, strlen(t), &a, err, sizeof err) == 0, "%s", err);
    CHECK(a.shape[0] == 1 && a.shape[1] == 2);
    rt_array_free(&a);

    t = "1e-400,0x10\n";        /* underflow to a tiny value is fine; strtod takes hex */
    CHECK(csv_parse_copy(t, strlen(t), &a, err, sizeof err) == 0, "%s", err);
    CHECK(a.data && a.data[0] >= 0 && a.data[0] < 1e-300 && a.data[1] == 16);
    rt_array_free(&a);
}

TEST(csv_errors) {
    char text[1024], err[64], *p = text;
    rt_array a;
    int i;

    for (i = 1; i <= 16; i++)
        p += sprintf(p, "%d,%d,%d\n", i, i, i);
    strcpy(p, "1,2,abc\n");
    CSV_ERR(text, "data.csv:17: field 3 is not a number: 'abc'");
    CSV_ERR("a,b\n1,2\n2,3\n# c\n1,2,3\n", "data.csv:5: expected 2 fields (as on line 1), found 3");
    CSV_ERR("1,2\n1\n", "data.csv:2: expected 2 fields (as on line 1), found 1");
    CSV_ERR("1,2\n1,2\n\n\n#\n1,2\n1,2\n\n1,nan\n", "data.csv:9: field 2 is NaN");
    CSV_ERR("1,2\n-NaN,2\n", "data.csv:2: field 1 is NaN");
    CSV_ERR("1,2\n1,nan(0x7)\n", "field 2 is NaN");
    CSV_ERR("inf,2\n", "data.csv:1: field 1 is Inf");
    CSV_ERR("x\n-Infinity\n", "data.csv:2: field 1 is -Inf");
    CSV_ERR("1,2\n3,1e999\n", "data.csv:2: field 2 is out of range for a double: '1e999'");
    CSV_ERR("1,,3\n", "data.csv:1: field 2 is empty");
    CSV_ERR("1,2,\n", "data.csv:1: field 3 is empty");
    CSV_ERR("1,2\n3,4\nx,y\n", "data.csv:3: field 1 is not a number: 'x' (a header is only allowed on the first line)");
    CSV_ERR("x,y\nx,y\n", "data.csv:2: field 1 is not a number: 'x' (a header");
    CSV_ERR("1,2\n3,4 5\n", "data.csv:2: field 2 is not a number: '4 5'");
    CSV_ERR("1;2\n3,4\n", "data.csv:2: expected 1 fields");
    CSV_ERR("", "data.csv: file is empty");
    CSV_ERR("\xEF\xBB\xBF", "data.csv: file is empty");
    CSV_ERR("x,y\n", "data.csv: no data rows (only a header on line 1)");
    CSV_ERR("# nothing\n\n  \n", "data.csv: no data rows (only blank lines and comments)");
    CSV_ERR("1\n2\r3\n", "data.csv:2: field 1 is not a number: '2\\x0d3'");
    CSV_ERR("1\n\"2\"\n", "field 1 is not a number: '\"2\"'");
    /* a NUL byte inside a field (the buffer is not a C string) */
    CHECK(csv_parse_copy("1\n2\0003\n", 6, &a, text, sizeof text) == -1);
    CHECK(strstr(text, "data.csv:2: field 1 is not a number: '2\\x003'") != NULL, "%s", text);
    /* long fields are cut in the message */
    p = text;
    p += sprintf(p, "1\n");
    for (i = 0; i < 100; i++)
        *p++ = 'z';
    strcpy(p, "\n");
    CSV_ERR(text, "field 1 is not a number: 'zzzzzzzzzz");
    CSV_ERR(text, "zzz...'");
    p = text + 2;
    for (i = 0; i < 600; i++)
        *p++ = '1';
    strcpy(p, "\n");
    CSV_ERR(text, "field 1 is not a number (600 characters long)");
    /* a small message buffer is cut, never overrun */
    CHECK(csv_parse_copy("1,2\n3,x\n", 8, &a, err, 16) == -1);
    CHECK(strlen(err) == 15 && strncmp(err, "data.csv:2: fie", 15) == 0, "%s", err);
    CHECK(csv_parse_copy("1,2\n3,x\n", 8, &a, NULL, 0) == -1);
}

TEST(csv_mutations) {
    const char *src = "x, y,z\n1.5,2,3\r\n# c\n-4e2 , 5, 6\n\n7,8,9";
    char m[64], err[256];
    size_t n = strlen(src);
    uint64_t s = 777;
    rt_array a;
    int i, k;
    const char alphabet[] = "0123456789.,-+eE#\n\r \tnaif\0x";
    for (i = 0; i < 20000; i++) {
        size_t len = n;
        memcpy(m, src, n);
        for (k = 0; k < 1 + (int)(rnd(&s) % 3); k++)
            m[rnd(&s) % n] = rnd(&s) % 3 ? alphabet[rnd(&s) % (sizeof alphabet - 1)] : (char)rnd(&s);
        if (rnd(&s) % 4 == 0)
            len = rnd(&s) % (n + 1);
        if (csv_parse_copy(m, len, &a, err, sizeof err) == 0) {
            int64_t j;
            for (j = 0; j < a.shape[0] * a.shape[1]; j++)
                CHECK(isfinite(a.data[j]));
            rt_array_free(&a);
        } else {
            CHECK(a.data == NULL && strncmp(err, "data.csv:", 9) == 0, "%s", err);
        }
    }
}

TEST(read_data_files) {
    char p[512], err[512] = "";
    rt_array a;
    const char *csv = "a,b\n1,2\n";
    unsigned char buf[256], data[16];
    size_t n;

    CHECK(write_bytes(tpath(p, sizeof p, "in.csv"), csv, strlen(csv)) == 0);
    CHECK(rt_read_data(p, &a, err, sizeof err) == 0, "%s", err);
    CHECK(a.shape[0] == 1 && a.shape[1] == 2);
    rt_array_free(&a);

    /* .npy picks the NPY parser, in any case; anything else is CSV */
    put_f64(data, 1), put_f64(data + 8, 2);
    n = mk_npy(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", data, 16);
    CHECK(write_bytes(tpath(p, sizeof p, "UP.NPY"), buf, n) == 0);
    CHECK(rt_read_data(p, &a, err, sizeof err) == 0, "%s", err);
    CHECK(a.ndim == 1 && a.shape[0] == 2);
    rt_array_free(&a);
    CHECK(write_bytes(tpath(p, sizeof p, "npy.dat"), buf, n) == 0);
    CHECK(rt_read_data(p, &a, err, sizeof err) == -1);
    CHECK(strstr(err, "npy.dat: no data rows (only a header on line 1)") != NULL, "%s", err);

    CHECK(rt_read_data(tpath(p, sizeof p, "missing.csv"), &a, err, sizeof err) == -1);
    CHECK(strstr(err, "missing.csv: cannot open: No such file") != NULL, "%s", err);
    CHECK(rt_read_data(tmpdir, &a, err, sizeof err) == -1);
    CHECK(strstr(err, "is a directory") != NULL, "%s", err);
    CHECK(write_bytes(tpath(p, sizeof p, "empty.npy"), "", 0) == 0);
    CHECK(rt_read_data(p, &a, err, sizeof err) == -1);
    CHECK(strstr(err, "empty.npy: file is empty") != NULL, "%s", err);
}

TEST(write_data_args) {
    char p[512], err[512] = "";
    double v[2] = {1, 2};
    tpath(p, sizeof p, "args.npy");
    CHECK(rt_write_data(p, v, 0, 2, RT_F64, err, sizeof err) == -1 && strstr(err, "nothing to write"), "%s", err);
    CHECK(rt_write_data(p, v, 2, 0, RT_F64, err, sizeof err) == -1 && strstr(err, "nothing to write"), "%s", err);
    CHECK(rt_write_data(p, v, 1, 2, 7, err, sizeof err) == -1 && strstr(err, "invalid dtype 7"), "%s", err);
    CHECK(rt_write_data(p, NULL, 1, 2, RT_F64, err, sizeof err) == -1 && strstr(err, "no data"), "%s", err);
    CHECK(rt_write_data(p, v, INT64_MAX, 2, RT_F64, err, sizeof err) == -1 && strstr(err, "too many"), "%s", err);
    CHECK(access(p, F_OK) != 0, "a file was written");
    CHECK(count_tmp(tmpdir) == 0);
}

/* ---- safetensors ---- */

/* The tensors of the round-trip test; f32 values are exactly representable. */
static double w_data[6] = {0.5, -1.25, 3.0, 0x1p-140, 65504.0, -0.0};   /* 0x1p-140: f32 subnormal */
static double b_data[3] = {0.1, -0.0, 5e-324};
static double s_data[1] = {1.0 / 3.0};
static double q_data[4] = {1, 2, 3, 4};

static int make_tensors(rt_tensor t[5]) {
    memset(t, 0, 5 * sizeof *t);
    t[0].name = "w";                 t[0].dtype = RT_F32; t[0].ndim = 2;
    t[0].shape[0] = 2; t[0].shape[1] = 3; t[0].numel = 6; t[0].data = w_data;
    t[1].name = "layer.0/bias \"q\"\\\n\xce\xbb";   /* quotes, backslash, newline, UTF-8 */
    t[1].dtype = RT_F64; t[1].ndim = 1; t[1].shape[0] = 3; t[1].numel = 3; t[1].data = b_data;
    t[2].name = "scalar";            t[2].dtype = RT_F64; t[2].ndim = 0; t[2].numel = 1; t[2].data = s_data;
    t[3].name = "empty";             t[3].dtype = RT_F32; t[3].ndim = 1; t[3].numel = 0; t[3].data = NULL;
    t[4].name = "four";              t[4].dtype = RT_F64; t[4].ndim = 4;
    t[4].shape[0] = 1; t[4].shape[1] = 2; t[4].shape[2] = 1; t[4].shape[3] = 2; t[4].numel = 4; t[4].data = q_data;
    return 5;
}

static const char *const meta_k[2] = {"format", "note"};
static const char *const meta_v[2] = {"pt", "a \"quoted\"\nline \xc3\xbc \x01"};

TEST(st_roundtrip) {
    rt_tensor t[5];
    rt_tensorfile f;
    char p[512], err[512] = "";
    unsigned char *b;
    size_t n;
    uint64_t hs = 0;
    int i, k, n_t = make_tensors(t);

    CHECK(rt_st_write(tpath(p, sizeof p, "m.safetensors"), t, n_t, meta_k, meta_v, 2, err, sizeof err) == 0, "%s", err);
    CHECK(count_tmp(tmpdir) == 0);
    CHECK(rt_st_read(p, &f, err, sizeof err) == 0, "%s", err);
    CHECK(f.n == n_t && f.nmeta == 2, "n=%d nmeta=%d", f.n, f.nmeta);
    for (i = 0; i < f.n && i < n_t; i++) {
        const rt_tensor *x = &f.t[i];
        CHECK_STR(x->name, t[i].name);
        CHECK(x->dtype == t[i].dtype && x->ndim == t[i].ndim && x->numel == t[i].numel, "tensor %d", i);
        CHECK(x->data != NULL, "tensor %d has NULL data", i);
        for (k = 0; k < x->ndim; k++)
            CHECK(x->shape[k] == t[i].shape[k], "tensor %d dim %d", i, k);
        for (k = 0; x->data && k < x->numel; k++)
            CHECK(same_bits(x->data[k], t[i].data[k]), "tensor %d value %d: %.17g vs %.17g", i, k, x->data[k], t[i].data[k]);
    }
    CHECK(rt_st_find(&f, "scalar") == &f.t[2]);
    CHECK(rt_st_find(&f, "nope") == NULL);
    CHECK_STR(rt_st_meta(&f, "format"), "pt");
    CHECK_STR(rt_st_meta(&f, "note"), meta_v[1]);
    CHECK(rt_st_meta(&f, "other") == NULL);
    rt_st_free(&f);
    CHECK(f.t == NULL && f.n == 0);

    /* layout: data starts at a multiple of 8; contiguous offsets in header order */
    b = read_bytes(p, &n);
    CHECK(b != NULL);
    if (!b)
        return;
    for (i = 7; i >= 0; i--)
        hs = hs << 8 | b[i];
    CHECK((8 + hs) % 8 == 0, "header size %llu", (unsigned long long)hs);
    CHECK(n == 8 + hs + 24 + 24 + 8 + 0 + 32, "file size %zu", n);
    CHECK(has(b, n, "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"));
    CHECK(has(b, n, "\"scalar\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[48,56]}"));
    CHECK(has(b, n, "\"__metadata__\":{\"format\":\"pt\""));
    free(b);

    /* no tensors and no metadata is a valid, tiny file */
    CHECK(rt_st_write(p, NULL, 0, NULL, NULL, 0, err, sizeof err) == 0, "%s", err);
    CHECK(rt_st_read(p, &f, err, sizeof err) == 0, "%s", err);
    CHECK(f.n == 0 && f.nmeta == 0);
    rt_st_free(&f);
}

TEST(st_accepts) {
    rt_tensorfile f;
    unsigned char data[16];
    put_f32(data, 1.5f), put_f32(data + 4, -2);
    put_f64(data + 8, 0.25);
    /* whitespace, escapes (incl. a surrogate pair), unknown keys holding any JSON, metadata null */
    if (ST_OK(" {\n \"__metadata__\" : null ,\n"
              "  \"caf\\u00e9\\ud83d\\ude00\\/\\t\": {\"shape\": [2], \"dtype\": \"F32\", \"data_offsets\": [0, 8],\n"
              "     \"x\": {\"a\": [1, -2.5e+3, 0.0, true, false, null, \"s\", {}, []]}},\n"
              "  \"b\": {\"dtype\":\"F64\",\"shape\":[1,1],\"data_offsets\":[8,16]}\n} \t\r\n    ",
              data, 16, &f) == 0) {
        CHECK(f.n == 2 && f.nmeta == 0);
        CHECK_STR(f.t[0].name, "caf\xc3\xa9\xf0\x9f\x98\x80/\t");
        CHECK(f.t[0].data[0] == 1.5 && f.t[0].data[1] == -2 && f.t[1].data[0] == 0.25);
        CHECK(f.t[1].ndim == 2 && f.t[1].shape[0] == 1 && f.t[1].numel == 1);
        rt_st_free(&f);
    }
    /* empty header object, empty metadata, empty tensors */
    if (ST_OK("{}", NULL, 0, &f) == 0)
        rt_st_free(&f);
    if (ST_OK("{\"__metadata__\":{},\"e\":{\"dtype\":\"F64\",\"shape\":[0,5],\"data_offsets\":[0,0]}}", NULL, 0, &f) == 0) {
        CHECK(f.n == 1 && f.t[0].numel == 0 && f.t[0].data != NULL);
        rt_st_free(&f);
    }
}

TEST(st_errors) {
    unsigned char d[64], *b;
    char err[512] = "", deep[512], *p;
    rt_tensorfile f;
    size_t len;
    int i;

    memset(d, 0, sizeof d);
    /* sizes */
    CHECK(st_parse_copy("\x10\0\0", 3, &f, err, sizeof err) == -1);
    CHECK(strstr(err, "model.safetensors: file is too short to be safetensors (3 bytes") != NULL, "%s", err);
    b = mk_st("{}", NULL, 0, &len);
    put_le(b, 3, 8);
    CHECK(st_parse_copy(b, len, &f, err, sizeof err) == -1);
    CHECK(strstr(err, "header size 3 is larger than the rest of the file (2 bytes)") != NULL, "%s", err);
    put_le(b, 200000000, 8);
    CHECK(st_parse_copy(b, len, &f, err, sizeof err) == -1);
    CHECK(strstr(err, "header size 200000000 is absurd") != NULL, "%s", err);
    put_le(b, UINT64_MAX, 8);
    CHECK(st_parse_copy(b, len, &f, err, sizeof err) == -1);
    CHECK(strstr(err, "is absurd") != NULL, "%s", err);
    free(b);

    /* JSON syntax, with the byte offset in the header */
    ST_ERR("{\"a\":{\"dtype\":\"F32\",,\"shape\":[1],\"data_offsets\":[0,4]}}", d, 4,
           "JSON syntax error in the header at byte 20: expected a string");
    ST_ERR("", NULL, 0, "at byte 0: the header must be a JSON object");
    ST_ERR("[1]", NULL, 0, "the header must be a JSON object");
    ST_ERR("{\"a\" 1}", NULL, 0, "at byte 5: expected ':'");
    ST_ERR("{\"__metadata__\":{}", NULL, 0, "at byte 18: expected ',' or '}'");
    ST_ERR("{\"a", NULL, 0, "at byte 1: unterminated string");
    ST_ERR("{}x", NULL, 0, "at byte 2: unexpected text after the JSON object");
    ST_ERR("{},", NULL, 0, "unexpected text after");
    ST_ERR("{\"__metadata__\":{\"k\":\"v\",}}", NULL, 0, "expected a string");
    ST_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":01}}", d, 4, "leading zeros");
    ST_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1.}}", d, 4, "digit after '.'");
    ST_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1e}}", d, 4, "digit in the exponent");
    ST_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":tru}}", d, 4, "expected a value");
    ST_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":[1 2]}}", d, 4, "expected ',' or ']'");
    ST_ERR("{\"a\\q\":{}}", NULL, 0, "at byte 3: invalid escape");
    ST_ERR("{\"a\\u12\":{}}", NULL, 0, "invalid escape");
    ST_ERR("{\"\\udc00\":{}}", NULL, 0, "lone low surrogate");
    ST_ERR("{\"\\ud800x\":{}}", NULL, 0, "without a low surrogate");
    ST_ERR("{\"a\xff\":{}}", NULL, 0, "at byte 3: invalid UTF-8");
    ST_ERR("{\"a\xc0\x80\":{}}", NULL, 0, "invalid UTF-8");          /* overlong NUL */
    ST_ERR("{\"a\xed\xa0\x80\":{}}", NULL, 0, "invalid UTF-8");      /* encoded surrogate */
    ST_ERR("{\"a\nb\":{}}", NULL, 0, "control character in string");
    ST_ERR("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", d, 4,
           "tensor name 'a\\x00b' contains a NUL character");
    /* depth: the unknown key's value is at level 3, so 62 nested arrays reach 64 */
    for (i = 62; i <= 63; i++) {
        int k;
        p = deep + sprintf(deep, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":");
        for (k = 0; k < i; k++)
            *p++ = '[';
        for (k = 0; k < i; k++)
            *p++ = ']';
        strcpy(p, "}}");
        if (i == 62) {
            if (ST_OK(deep, d, 4, &f) == 0)
                rt_st_free(&f);
        } else {
            ST_ERR(deep, d, 4, "nesting is deeper than 64 levels");
        }
    }

    /* dtypes, shapes, offsets */
    ST_ERR("{\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", d, 4,
           "model.safetensors: tensor 'w': unsupported dtype 'F16' (expected F32 or F64)");
    ST_ERR("{\"w\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", d, 8, "tensor 'w': unsupported dtype 'I64'");
    ST_ERR("{\"w\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2]}}", d, 2, "unsupported dtype 'BF16'");
    ST_ERR("{\"w\":{\"dtype\":\"F32\\u0000\",\"shape\":[1],\"data_offsets\":[0,4]}}", d, 4, "unsupported dtype 'F32\\x00'");
    ST_ERR("{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", d, 4, "tensor 'w': 'dtype' must be a string");
    ST_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", d, 4,
           "tensor 'w': shape [4294967296, 4294967296, 4294967296] overflows");
    ST_ERR("{\"w\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,4]}}", d, 4,
           "is too large (its size in bytes overflows)");
    ST_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", d, 4, "'shape' has more than 4 dimensions");
    ST_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", d, 4, "(found a negative number)");
    ST_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", d, 4, "(found a fraction or exponent)");
    ST_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", d, 4, "(found a larger one)");
    ST_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", d, 4, "'shape' must be an array of integers");
    ST_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", d, 4, "'shape' must be an array of integers");
    ST_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,],\"data_offsets\":[0,4]}}", d, 4, "at byte 31: expected a number");
    ST_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", d, 4, "'data_offsets' must have 2 entries");
    ST_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", d, 8, "'data_offsets' must have 2 entries");
    ST_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", d, 4, "tensor 'w': missing 'data_offsets'");
    ST_ERR("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", d, 4, "tensor 'w': missing 'dtype'");
    ST_ERR("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", d, 4, "duplicate key 'dtype'");
    ST_ERR("{\"w\":[1]}", NULL, 0, "tensor 'w': expected an object");
    ST_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", d, 20,
           "tensor 'w': data_offsets [0, 20] hold 20 bytes but shape [2, 3] of F32 needs 24");
    ST_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", d, 8, "end before they begin");
    ST_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", d, 16,
           "tensor 'w': data_offsets [0, 24] are out of the data buffer (16 bytes");
    ST_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[18446744073709551615,3]}}", d, 4, "(found a larger one)");
    ST_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", d, 16,
           "tensor 'b': data_offsets [4, 12] overlap the previous tensor or are out of order");
    ST_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", d, 16,
           "tensor 'a': data_offsets [8, 16] leave a gap or are out of order (expected to begin at byte 0");
    ST_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", d, 12, "tensor 'b': data_offsets [8, 12] leave a gap");
    ST_ERR("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", d, 6,
           "the data buffer has 6 bytes but the tensors use 4");
    ST_ERR("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
           "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", d, 8, "duplicate tensor name 'w'");

    /* metadata */
    ST_ERR("{\"__metadata__\":{\"epoch\":3}}", NULL, 0, "model.safetensors: __metadata__ value for 'epoch' is not a string");
    ST_ERR("{\"__metadata__\":{\"a\":\"1\",\"b\":null}}", NULL, 0, "__metadata__ value for 'b' is not a string");
    ST_ERR("{\"__metadata__\":[\"a\"]}", NULL, 0, "__metadata__ must be an object of strings");
    ST_ERR("{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", NULL, 0, "duplicate __metadata__ key 'a'");
    ST_ERR("{\"__metadata__\":{},\"__metadata__\":{}}", NULL, 0, "duplicate __metadata__");
    ST_ERR("{\"__metadata__\":{\"a\":\"x\\u0000y\"}}", NULL, 0, "__metadata__ entry 'a' contains a NUL character");
}

TEST(st_truncations) {
    rt_tensor t[5];
    rt_tensorfile f;
    char p[512], err[512] = "";
    unsigned char *b;
    size_t n, k;
    int bad = 0, n_t = make_tensors(t);
    CHECK(rt_st_write(tpath(p, sizeof p, "tr.safetensors"), t, n_t, meta_k, meta_v, 2, err, sizeof err) == 0, "%s", err);
    b = read_bytes(p, &n);
    CHECK(b != NULL);
    if (!b)
        return;
    for (k = 0; k < n; k++) {
        int rc = st_parse_copy(b, k, &f, err, sizeof err);
        if (rc != -1 || f.t != NULL || f.meta_keys != NULL || strncmp(err, "model.safetensors: ", 19) != 0)
            bad++;
        if (rc == 0)
            rt_st_free(&f);
    }
    CHECK(bad == 0, "%d prefixes were not rejected cleanly", bad);
    CHECK(st_parse_copy(b, n, &f, err, sizeof err) == 0, "%s", err);
    rt_st_free(&f);
    free(b);
}

TEST(st_mutations) {
    rt_tensor t[5];
    rt_tensorfile f;
    char p[512], err[512] = "";
    unsigned char *b, *m;
    size_t n, hs;
    uint64_t s = 4242;
    int i, k, ok = 0, n_t = make_tensors(t);
    const char alphabet[] = "{}[]\":,0123456789-.eE \\u\"FI";
    CHECK(rt_st_write(tpath(p, sizeof p, "mu.safetensors"), t, n_t, meta_k, meta_v, 2, err, sizeof err) == 0, "%s", err);
    b = read_bytes(p, &n);
    CHECK(b != NULL);
    if (!b)
        return;
    hs = (size_t)b[0] | (size_t)b[1] << 8;
    m = malloc(n);
    for (i = 0; i < 20000; i++) {
        size_t len = n;
        memcpy(m, b, n);
        for (k = 0; k < 1 + (int)(rnd(&s) % 3); k++) {
            size_t pos = rnd(&s) % 8 == 0 ? rnd(&s) % n : 8 + rnd(&s) % hs;   /* mostly the JSON */
            m[pos] = rnd(&s) % 2 ? (unsigned char)alphabet[rnd(&s) % (sizeof alphabet - 1)] : (unsigned char)rnd(&s);
        }
        if (rnd(&s) % 8 == 0)
            len = rnd(&s) % (n + 1);
        if (st_parse_copy(m, len, &f, err, sizeof err) == 0) {
            ok++;
            rt_st_free(&f);
        } else {
            CHECK(f.t == NULL && f.meta_keys == NULL && strncmp(err, "model.safetensors: ", 19) == 0, "%s", err);
        }
    }
    CHECK(ok > 0, "no mutation parsed");
    free(m);
    free(b);
}

TEST(st_write_errors) {
    rt_tensor t[5], x[2];
    char p[512], err[512] = "";
    const char *bad_k[1] = {"k"}, *bad_v[1] = {NULL}, *dup_k[2] = {"k", "k"}, *dup_v[2] = {"1", "2"};
    int n_t = make_tensors(t);
    tpath(p, sizeof p, "bad.safetensors");

    memcpy(x, t, 2 * sizeof *t);
    x[1].name = "w";
    CHECK(rt_st_write(p, x, 2, NULL, NULL, 0, err, sizeof err) == -1 && strstr(err, "duplicate tensor name 'w'"), "%s", err);
    memcpy(x, t, sizeof *t);
    x[0].name = "__metadata__";
    CHECK(rt_st_write(p, x, 1, NULL, NULL, 0, err, sizeof err) == -1 && strstr(err, "is reserved"), "%s", err);
    x[0].name = "bad\xff";
    CHECK(rt_st_write(p, x, 1, NULL, NULL, 0, err, sizeof err) == -1 && strstr(err, "not valid UTF-8"), "%s", err);
    x[0].name = NULL;
    CHECK(rt_st_write(p, x, 1, NULL, NULL, 0, err, sizeof err) == -1 && strstr(err, "missing (NULL)"), "%s", err);
    memcpy(x, t, sizeof *t);
    x[0].dtype = 9;
    CHECK(rt_st_write(p, x, 1, NULL, NULL, 0, err, sizeof err) == -1 && strstr(err, "tensor 'w': invalid dtype 9"), "%s", err);
    memcpy(x, t, sizeof *t);
    x[0].numel = 5;
    CHECK(rt_st_write(p, x, 1, NULL, NULL, 0, err, sizeof err) == -1 && strstr(err, "numel 5 does not match"), "%s", err);
    memcpy(x, t, sizeof *t);
    x[0].ndim = 5;
    CHECK(rt_st_write(p, x, 1, NULL, NULL, 0, err, sizeof err) == -1 && strstr(err, "ndim 5"), "%s", err);
    memcpy(x, t, sizeof *t);
    x[0].shape[1] = -3;
    CHECK(rt_st_write(p, x, 1, NULL, NULL, 0, err, sizeof err) == -1 && strstr(err, "negative or too large"), "%s", err);
    memcpy(x, t, sizeof *t);
    x[0].data = NULL;
    CHECK(rt_st_write(p, x, 1, NULL, NULL, 0, err, sizeof err) == -1 && strstr(err, "no data"), "%s", err);
    CHECK(rt_st_write(p, t, n_t, bad_k, bad_v, 1, err, sizeof err) == -1 && strstr(err, "metadata entry 0"), "%s", err);
    CHECK(rt_st_write(p, t, n_t, dup_k, dup_v, 2, err, sizeof err) == -1 && strstr(err, "duplicate metadata key 'k'"), "%s", err);
    CHECK(rt_st_write(p, t, -1, NULL, NULL, 0, err, sizeof err) == -1 && strstr(err, "invalid arguments"), "%s", err);
    CHECK(access(p, F_OK) != 0, "a file was written");
    CHECK(count_tmp(tmpdir) == 0);
}

/* ---- atomic writes ---- */

typedef struct {
    int rc[3];
    char err[3][256];
} Attempts;

/* Try to overwrite the three files in dir (run in a child without root rights if we are root,
 * since root may write into a read-only directory). */
static void attempt_writes(const char *dir, Attempts *at) {
    rt_tensor t[5];
    char p[512];
    double v[2] = {9, 9};
    int n_t = make_tensors(t);
    snprintf(p, sizeof p, "%s/ck.safetensors", dir);
    at->rc[0] = rt_st_write(p, t, n_t, meta_k, meta_v, 2, at->err[0], sizeof at->err[0]);
    snprintf(p, sizeof p, "%s/d.npy", dir);
    at->rc[1] = rt_write_data(p, v, 1, 2, RT_F64, at->err[1], sizeof at->err[1]);
    snprintf(p, sizeof p, "%s/d.csv", dir);
    at->rc[2] = rt_write_data(p, v, 2, 1, RT_F32, at->err[2], sizeof at->err[2]);
}

/* 0: attempts made; 1: could not drop root rights (skip). */
static int attempt_writes_unprivileged(const char *dir, Attempts *at) {
    int fds[2], status;
    pid_t pid;
    memset(at, 0, sizeof *at);
    if (geteuid() != 0) {
        attempt_writes(dir, at);
        return 0;
    }
    if (pipe(fds) != 0)
        return 1;
    fflush(stdout);
    pid = fork();
    if (pid < 0)
        return 1;
    if (pid == 0) {
        close(fds[0]);
        if (setgid(65534) != 0 || setuid(65534) != 0)
            _exit(3);
        attempt_writes(dir, at);
        _exit(write(fds[1], at, sizeof *at) == (ssize_t)sizeof *at ? 0 : 4);
    }
    close(fds[1]);
    if (read(fds[0], at, sizeof *at) != (ssize_t)sizeof *at)
        memset(at, 0, sizeof *at);
    close(fds[0]);
    waitpid(pid, &status, 0);
    return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(atomic_write_readonly_dir) {
    char dir[512], p[3][600], err[512] = "";
    unsigned char *old[3], *now;
    size_t oldn[3], nown;
    rt_tensor t[5];
    Attempts at;
    double v[4] = {1, 2, 3, 4};
    int i, n_t = make_tensors(t);

    tpath(dir, sizeof dir, "ro");
    CHECK(mkdir(dir, 0755) == 0);
    snprintf(p[0], sizeof p[0], "%s/ck.safetensors", dir);
    snprintf(p[1], sizeof p[1], "%s/d.npy", dir);
    snprintf(p[2], sizeof p[2], "%s/d.csv", dir);
    CHECK(rt_st_write(p[0], t, 1, NULL, NULL, 0, err, sizeof err) == 0, "%s", err);
    CHECK(rt_write_data(p[1], v, 2, 2, RT_F64, err, sizeof err) == 0, "%s", err);
    CHECK(rt_write_data(p[2], v, 4, 1, RT_F64, err, sizeof err) == 0, "%s", err);
    for (i = 0; i < 3; i++)
        old[i] = read_bytes(p[i], &oldn[i]);
    (void)n_t;

    chmod(tmpdir, 0755);   /* so that an unprivileged child can get in */
    CHECK(chmod(dir, 0555) == 0);
    if (attempt_writes_unprivileged(dir, &at)) {
        printf("    (skipped the unwritable-directory case: cannot drop root rights)\n");
    } else {
        for (i = 0; i < 3; i++) {
            CHECK(at.rc[i] == -1, "attempt %d succeeded in a read-only directory", i);
            CHECK(strstr(at.err[i], "cannot create temp file") && strstr(at.err[i], "Permission denied"),
                  "attempt %d: %s", i, at.err[i]);
            CHECK(strncmp(at.err[i], p[i], strlen(p[i])) == 0, "attempt %d: %s", i, at.err[i]);
        }
    }
    chmod(dir, 0755);
    chmod(tmpdir, 0700);
    for (i = 0; i < 3; i++) {
        now = read_bytes(p[i], &nown);
        CHECK(old[i] && now && nown == oldn[i] && memcmp(now, old[i], nown) == 0, "file %d changed", i);
        free(now);
        free(old[i]);
    }
    CHECK(count_tmp(dir) == 0);
}

TEST(atomic_write_failures) {
    char p[512], q[600], err[512] = "";
    unsigned char *before, *after;
    size_t nb, na;
    rt_tensor t[5];
    rt_tensorfile f;
    double v[2] = {1, 2};
    int n_t = make_tensors(t);
    FILE *fp;

    /* PATH is a directory: the temp file is written, the rename fails, the temp file goes */
    tpath(p, sizeof p, "isdir.safetensors");
    CHECK(mkdir(p, 0755) == 0);
    CHECK(rt_st_write(p, t, n_t, meta_k, meta_v, 2, err, sizeof err) == -1);
    CHECK(strstr(err, "isdir.safetensors: cannot replace it with the temp file: Is a directory") != NULL, "%s", err);
    tpath(p, sizeof p, "isdir.npy");
    CHECK(mkdir(p, 0755) == 0);
    CHECK(rt_write_data(p, v, 1, 2, RT_F32, err, sizeof err) == -1);
    CHECK(strstr(err, "Is a directory") != NULL, "%s", err);
    CHECK(count_tmp(tmpdir) == 0);
    CHECK(rmdir(p) == 0, "the directory is no longer empty");

    /* a missing directory */
    tpath(p, sizeof p, "no/such/dir/x.safetensors");
    CHECK(rt_st_write(p, t, n_t, NULL, NULL, 0, err, sizeof err) == -1);
    CHECK(strstr(err, "x.safetensors: cannot create temp file") && strstr(err, "No such file"), "%s", err);

    /* overwrite works, and a stale temp file of our pid is no obstacle */
    tpath(p, sizeof p, "over.safetensors");
    CHECK(rt_st_write(p, t, 1, NULL, NULL, 0, err, sizeof err) == 0, "%s", err);
    before = read_bytes(p, &nb);
    snprintf(q, sizeof q, "%s.tmp.%ld", p, (long)getpid());
    fp = fopen(q, "w");
    CHECK(fp != NULL);
    if (fp)
        fclose(fp);
    CHECK(rt_st_write(p, t, n_t, meta_k, meta_v, 2, err, sizeof err) == 0, "%s", err);
    after = read_bytes(p, &na);
    CHECK(before && after && (nb != na || memcmp(before, after, na) != 0), "not overwritten");
    free(before);
    free(after);
    CHECK(rt_st_read(p, &f, err, sizeof err) == 0 && f.n == n_t, "%s", err);
    rt_st_free(&f);
    CHECK(count_tmp(tmpdir) == 0);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

int main(void) {
    strcpy(tmpdir, "/tmp/nfc_test_io.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(npy_roundtrip_f64);
    RUN(npy_roundtrip_f32);
    RUN(npy_versions_and_1d);
    RUN(npy_errors);
    RUN(npy_truncations);
    RUN(npy_mutations);
    RUN(csv_roundtrip);
    RUN(csv_accepts);
    RUN(csv_errors);
    RUN(csv_mutations);
    RUN(read_data_files);
    RUN(write_data_args);
    RUN(st_roundtrip);
    RUN(st_accepts);
    RUN(st_errors);
    RUN(st_truncations);
    RUN(st_mutations);
    RUN(st_write_errors);
    RUN(atomic_write_readonly_dir);
    RUN(atomic_write_failures);
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return t_done();
}

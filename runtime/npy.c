/* runtime/npy.c: NPY reader and writer, the data-file entry points, and shared I/O helpers.
 *
 * Input:  an NPY file or buffer: magic "\x93NUMPY", version 1.0, 2.0 or 3.0, a header that is
 *         a Python dict literal {'descr': '<f8', 'fortran_order': False, 'shape': (R, C), }
 *         and then R*C little-endian '<f4' or '<f8' values in C order.
 * Output: an rt_array of doubles, or an error message naming the file and the place.
 *         The writer produces NPY v1.0 with a 2-d shape and the header padded to 64 bytes.
 *
 * Also here: rt_read_data/rt_write_data (choose NPY or CSV by the file name), reading whole
 * files, atomic writes (temp file, fsync, rename, fsync the directory), and little-endian value
 * conversion, which csv.c and safetensors.c use too.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "rt_io.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(sizeof(float) == 4 && sizeof(double) == 8, "IEEE float and double expected");

/* ---- shared helpers ---- */

void rt_io_errf(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

char *rt_io_quote(char *dst, size_t dstlen, const char *s, size_t n) {
    size_t i, j = 0;
    if (dstlen == 0)
        return dst;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char piece[8];
        size_t k;
        if (c == '\\')
            strcpy(piece, "\\\\");
        else if (c >= 0x20 && c < 0x7f)
            piece[0] = (char)c, piece[1] = '\0';
        else
            snprintf(piece, sizeof piece, "\\x%02x", c);
        k = strlen(piece);
        if (i >= 40 || j + k + 4 > dstlen) {   /* keep room for "..." and the NUL */
            if (j + 4 <= dstlen)
                memcpy(dst + j, "...", 3), j += 3;
            break;
        }
        memcpy(dst + j, piece, k);
        j += k;
    }
    dst[j] = '\0';
    return dst;
}

int rt_io_read_file(const char *path, unsigned char **bufp, size_t *lenp, char *err, size_t errlen) {
    FILE *f;
    struct stat st;
    unsigned char *buf;
    size_t cap = 1 << 16, len = 0;

    *bufp = NULL;
    *lenp = 0;
    f = fopen(path, "rb");
    if (!f) {
        rt_io_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fileno(f), &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            rt_io_errf(err, errlen, "%s: is a directory, not a file", path);
            fclose(f);
            return -1;
        }
        if (S_ISREG(st.st_mode) && st.st_size > 0 && (uint64_t)st.st_size < SIZE_MAX - 1)
            cap = (size_t)st.st_size + 1;   /* + 1 so that EOF is seen without growing */
    }
    buf = malloc(cap + 1);
    if (!buf) {
        rt_io_errf(err, errlen, "%s: out of memory reading the file", path);
        fclose(f);
        return -1;
    }
    for (;;) {
        size_t got;
        if (len == cap) {
            unsigned char *nb;
            if (cap > SIZE_MAX / 2 - 1 || !(nb = realloc(buf, cap * 2 + 1))) {
                rt_io_errf(err, errlen, "%s: out of memory reading the file", path);
                free(buf);
                fclose(f);
                return -1;
            }
            buf = nb;
            cap *= 2;
        }
        got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) {
                rt_io_errf(err, errlen, "%s: read error: %s", path, strerror(errno));
                free(buf);
                fclose(f);
                return -1;
            }
            break;
        }
    }
    fclose(f);
    buf[len] = '\0';
    *bufp = buf;
    *lenp = len;
    return 0;
}

/* fsync the directory holding path, so that a rename in it is durable. Failing to open the
 * directory, or a file system that cannot sync directories (EINVAL), is not an error. */
static int sync_dir(const char *path, char *err, size_t errlen) {
    size_t n = strlen(path);
    char *dir = malloc(n + 2);
    char *slash;
    int fd, rc = 0;

    if (!dir)
        return 0;
    memcpy(dir, path, n + 1);
    slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        if (fsync(fd) != 0 && errno != EINVAL && errno != ENOTSUP) {
            rt_io_errf(err, errlen, "%s: written, but syncing the directory failed: %s "
                       "(the new file is in place but may not survive a crash)", path, strerror(errno));
            rc = -1;
        }
        close(fd);
    }
    free(dir);
    return rc;
}

int rt_io_write_atomic(const char *path, rt_io_emit_fn emit, void *ctx, char *err, size_t errlen) {
    size_t n = strlen(path);
    char *tmp = malloc(n + 32);
    FILE *f = NULL;
    int fd, e;

    if (!tmp) {
        rt_io_errf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    snprintf(tmp, n + 32, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno == EEXIST) {   /* left over by a dead process that had our pid */
        unlink(tmp);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    }
    if (fd < 0) {
        rt_io_errf(err, errlen, "%s: cannot create temp file '%s': %s", path, tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    f = fdopen(fd, "wb");
    if (!f) {
        rt_io_errf(err, errlen, "%s: cannot write temp file '%s': %s", path, tmp, strerror(errno));
        close(fd);
        goto fail;
    }
    if (emit(f, ctx, err, errlen) != 0)
        goto fail;
    if (fflush(f) != 0 || ferror(f)) {
        rt_io_errf(err, errlen, "%s: write error on temp file '%s': %s", path, tmp, strerror(errno));
        goto fail;
    }
    if (fsync(fileno(f)) != 0) {
        rt_io_errf(err, errlen, "%s: cannot sync temp file '%s': %s", path, tmp, strerror(errno));
        goto fail;
    }
    e = fclose(f);
    f = NULL;
    if (e != 0) {
        rt_io_errf(err, errlen, "%s: cannot close temp file '%s': %s", path, tmp, strerror(errno));
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        rt_io_errf(err, errlen, "%s: cannot replace it with the temp file: %s", path, strerror(errno));
        goto fail;
    }
    free(tmp);
    return sync_dir(path, err, errlen);

fail:
    if (f)
        fclose(f);
    unlink(tmp);
    free(tmp);
    return -1;
}

void rt_io_get_values(const unsigned char *p, size_t n, int dtype, double *out) {
    size_t i;
    int k;
    if (dtype == RT_F32) {
        for (i = 0; i < n; i++, p += 4) {
            uint32_t u = 0;
            float x;
            for (k = 3; k >= 0; k--)
                u = u << 8 | p[k];
            memcpy(&x, &u, 4);
            out[i] = x;
        }
    } else {
        for (i = 0; i < n; i++, p += 8) {
            uint64_t u = 0;
            for (k = 7; k >= 0; k--)
                u = u << 8 | p[k];
            memcpy(&out[i], &u, 8);
        }
    }
}

int rt_io_put_values(FILE *f, const double *v, size_t n, int dtype) {
    unsigned char buf[4096];
    size_t used = 0, size = dtype == RT_F32 ? 4 : 8, i;
    int k;
    for (i = 0; i < n; i++) {
        uint64_t u;
        if (dtype == RT_F32) {
            float x = (float)v[i];
            uint32_t w;
            memcpy(&w, &x, 4);
            u = w;
        } else {
            memcpy(&u, &v[i], 8);
        }
        for (k = 0; k < (int)size; k++, u >>= 8)
            buf[used++] = (unsigned char)(u & 0xff);
        if (used == sizeof buf) {
            if (fwrite(buf, 1, used, f) != used)
                return -1;
            used = 0;
        }
    }
    if (used && fwrite(buf, 1, used, f) != used)
        return -1;
    return 0;
}

/* ---- NPY header: a Python dict literal ---- */

typedef struct {
    const char *name;                       /* file name for messages */
    const unsigned char *start, *p, *end;   /* header text */
    char *err;
    size_t errlen;
} Hdr;

static int hfail(Hdr *h, const char *what) {
    rt_io_errf(h->err, h->errlen, "%s: malformed NPY header at header byte %ld: %s",
               h->name, (long)(h->p - h->start), what);
    return -1;
}

static int hpeek(Hdr *h) {
    return h->p < h->end ? *h->p : -1;
}

static void hskip(Hdr *h) {
    while (h->p < h->end && (*h->p == ' ' || *h->p == '\t' || *h->p == '\n' || *h->p == '\r'))
        h->p++;
}

/* A quoted string, '...' or "..."; its text (without quotes) is [*s, *s + *n). */
static int hstring(Hdr *h, const unsigned char **s, size_t *n) {
    int q = hpeek(h);
    const unsigned char *b;
    if (q != '\'' && q != '"')
        return hfail(h, "expected a quoted string");
    b = ++h->p;
    while (h->p < h->end && *h->p != q) {
        if (*h->p == '\\' && h->p + 1 < h->end)
            h->p++;
        h->p++;
    }
    if (h->p >= h->end)
        return hfail(h, "unterminated string");
    *s = b;
    *n = (size_t)(h->p - b);
    h->p++;
    return 0;
}

static int hword(Hdr *h, const unsigned char **s, size_t *n) {
    const unsigned char *b = h->p;
    while (h->p < h->end && ((*h->p >= 'A' && *h->p <= 'Z') || (*h->p >= 'a' && *h->p <= 'z') || *h->p == '_'))
        h->p++;
    if (h->p == b)
        return hfail(h, "expected a value");
    *s = b;
    *n = (size_t)(h->p - b);
    return 0;
}

static int span_is(const unsigned char *s, size_t n, const char *lit) {
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* A non-negative integer, with an optional Python 2 'L' suffix. */
static int hint(Hdr *h, int64_t *v) {
    int64_t x = 0;
    if (hpeek(h) == '-')
        return hfail(h, "negative number in the shape");
    if (hpeek(h) < '0' || hpeek(h) > '9')
        return hfail(h, "expected a non-negative integer");
    while (hpeek(h) >= '0' && hpeek(h) <= '9') {
        int d = *h->p - '0';
        if (x > (INT64_MAX - d) / 10)
            return hfail(h, "number too large");
        x = x * 10 + d;
        h->p++;
    }
    if (hpeek(h) == 'L')
        h->p++;
    *v = x;
    return 0;
}

/* A tuple of integers: (), (3,), (3, 2), ... The first two go to dims, all are counted. */
static int htuple(Hdr *h, int64_t dims[2], long *ndim) {
    *ndim = 0;
    if (hpeek(h) != '(')
        return hfail(h, "expected a tuple like (3, 2)");
    h->p++;
    for (;;) {
        int64_t v;
        hskip(h);
        if (hpeek(h) == ')')
            break;
        if (hint(h, &v))
            return -1;
        if (*ndim < 2)
            dims[*ndim] = v;
        (*ndim)++;
        hskip(h);
        if (hpeek(h) == ',')
            h->p++;
        else if (hpeek(h) != ')')
            return hfail(h, "expected ',' or ')' in the tuple");
    }
    h->p++;
    return 0;
}

/* The value of a key we do not use: a string, a word, an integer or a tuple of integers. */
static int hskip_value(Hdr *h) {
    const unsigned char *s;
    size_t n;
    int64_t dims[2];
    long nd;
    int c = hpeek(h);
    if (c == '\'' || c == '"')
        return hstring(h, &s, &n);
    if (c == '(')
        return htuple(h, dims, &nd);
    if (c >= '0' && c <= '9')
        return hint(h, dims);
    return hword(h, &s, &n);
}

typedef struct {
    int dtype;          /* RT_F32 or RT_F64 */
    long ndim;
    int64_t dims[2];
} NpyInfo;

static int parse_header(Hdr *h, NpyInfo *info) {
    const unsigned char *descr = NULL;
    size_t descr_n = 0;
    int have_fortran = 0, have_shape = 0;
    char q[64];

    hskip(h);
    if (hpeek(h) != '{')
        return hfail(h, "expected '{'");
    h->p++;
    for (;;) {
        const unsigned char *key, *w;
        size_t key_n, w_n;
        hskip(h);
        if (hpeek(h) == '}')
            break;
        if (hstring(h, &key, &key_n))
            return -1;
        hskip(h);
        if (hpeek(h) != ':')
            return hfail(h, "expected ':'");
        h->p++;
        hskip(h);
        if (span_is(key, key_n, "descr")) {
            if (descr)
                return hfail(h, "duplicate key 'descr'");
            if (hpeek(h) == '[') {
                rt_io_errf(h->err, h->errlen, "%s: unsupported dtype: structured arrays are not "
                           "supported (expected '<f4' or '<f8')", h->name);
                return -1;
            }
            if (hstring(h, &descr, &descr_n))
                return -1;
        } else if (span_is(key, key_n, "fortran_order")) {
            if (have_fortran)
                return hfail(h, "duplicate key 'fortran_order'");
            have_fortran = 1;
            if (hword(h, &w, &w_n))
                return -1;
            if (span_is(w, w_n, "True")) {
                rt_io_errf(h->err, h->errlen, "%s: Fortran order is not supported; save with C order", h->name);
                return -1;
            }
            if (!span_is(w, w_n, "False"))
                return hfail(h, "'fortran_order' must be True or False");
        } else if (span_is(key, key_n, "shape")) {
            if (have_shape)
                return hfail(h, "duplicate key 'shape'");
            have_shape = 1;
            if (htuple(h, info->dims, &info->ndim))
                return -1;
        } else if (hskip_value(h)) {
            return -1;
        }
        hskip(h);
        if (hpeek(h) == ',')
            h->p++;
        else if (hpeek(h) != '}')
            return hfail(h, "expected ',' or '}'");
    }
    h->p++;
    hskip(h);
    if (h->p != h->end)
        return hfail(h, "unexpected text after the dictionary");
    if (!descr || !have_fortran || !have_shape) {
        rt_io_errf(h->err, h->errlen, "%s: NPY header lacks '%s'", h->name,
                   !descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
        return -1;
    }
    if (span_is(descr, descr_n, "<f4")) {
        info->dtype = RT_F32;
    } else if (span_is(descr, descr_n, "<f8")) {
        info->dtype = RT_F64;
    } else if (span_is(descr, descr_n, ">f4") || span_is(descr, descr_n, ">f8")) {
        rt_io_errf(h->err, h->errlen, "%s: big-endian dtype '>f%c' is not supported; "
                   "save as little-endian '<f%c'", h->name, descr[2], descr[2]);
        return -1;
    } else {
        rt_io_errf(h->err, h->errlen, "%s: unsupported dtype '%s' (expected '<f4' or '<f8')",
                   h->name, rt_io_quote(q, sizeof q, (const char *)descr, descr_n));
        return -1;
    }
    return 0;
}

static const char *finite_problem(double v) {
    if (isnan(v))
        return "NaN";
    if (isinf(v))
        return v > 0 ? "Inf" : "-Inf";
    return NULL;
}

int rt_npy_parse(const char *name, const unsigned char *buf, size_t len, rt_array *out,
                 char *err, size_t errlen) {
    Hdr h;
    NpyInfo info;
    size_t hstart, hlen, esize;
    int64_t rows, cols, values;
    uint64_t nbytes, avail;
    char shape[64];
    double *data;
    int64_t i;

    memset(out, 0, sizeof *out);
    if (!name)
        name = "(buffer)";
    if (len == 0) {
        rt_io_errf(err, errlen, "%s: file is empty", name);
        return -1;
    }
    if (len < 6 || memcmp(buf, "\x93NUMPY", 6) != 0) {
        rt_io_errf(err, errlen, "%s: not an NPY file (bad magic; expected \"\\x93NUMPY\")", name);
        return -1;
    }
    if (len < 8) {
        rt_io_errf(err, errlen, "%s: file is truncated: no version after the magic", name);
        return -1;
    }
    if ((buf[6] != 1 && buf[6] != 2 && buf[6] != 3) || buf[7] != 0) {
        rt_io_errf(err, errlen, "%s: unsupported NPY version %d.%d (expected 1.0, 2.0 or 3.0)",
                   name, buf[6], buf[7]);
        return -1;
    }
    hstart = buf[6] == 1 ? 10 : 12;
    if (len < hstart) {
        rt_io_errf(err, errlen, "%s: file is truncated: no header length after the version", name);
        return -1;
    }
    if (buf[6] == 1)
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8;
    else
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
    if (hlen > len - hstart) {
        rt_io_errf(err, errlen, "%s: file is truncated: header length is %zu bytes but only %zu follow",
                   name, hlen, len - hstart);
        return -1;
    }

    h.name = name;
    h.start = h.p = buf + hstart;
    h.end = buf + hstart + hlen;
    h.err = err;
    h.errlen = errlen;
    info.ndim = 0;
    info.dims[0] = info.dims[1] = 0;
    if (parse_header(&h, &info))
        return -1;

    if (info.ndim == 0 || info.ndim > 2) {
        rt_io_errf(err, errlen, "%s: %ld-d arrays are not supported (expected a 1-d or 2-d shape)",
                   name, info.ndim);
        return -1;
    }
    rows = info.dims[0];
    cols = info.ndim == 2 ? info.dims[1] : 1;
    if (info.ndim == 2)
        snprintf(shape, sizeof shape, "%lldx%lld", (long long)rows, (long long)cols);
    else
        snprintf(shape, sizeof shape, "%lld", (long long)rows);
    if (rows == 0) {
        rt_io_errf(err, errlen, "%s: array has zero rows (shape %s)", name, shape);
        return -1;
    }
    if (cols == 0) {
        rt_io_errf(err, errlen, "%s: array has zero columns (shape %s)", name, shape);
        return -1;
    }
    esize = info.dtype == RT_F32 ? 4 : 8;
    avail = len - hstart - hlen;
    if (rows > INT64_MAX / cols || rows * cols > INT64_MAX / (int64_t)esize) {
        rt_io_errf(err, errlen, "%s: shape %s is too large (its size in bytes does not fit in 64 bits)",
                   name, shape);
        return -1;
    }
    values = rows * cols;
    nbytes = (uint64_t)values * esize;
    if (nbytes > avail) {
        rt_io_errf(err, errlen, "%s: file is truncated: header says %s values (%llu bytes) but %llu bytes follow",
                   name, shape, (unsigned long long)nbytes, (unsigned long long)avail);
        return -1;
    }
    if (nbytes < avail) {
        rt_io_errf(err, errlen, "%s: %llu unexpected bytes after the data (header says %s values, %llu bytes)",
                   name, (unsigned long long)(avail - nbytes), shape, (unsigned long long)nbytes);
        return -1;
    }

    data = malloc((size_t)values * sizeof(double));
    if (!data) {
        rt_io_errf(err, errlen, "%s: out of memory for %s values", name, shape);
        return -1;
    }
    rt_io_get_values(buf + hstart + hlen, (size_t)values, info.dtype, data);
    for (i = 0; i < values; i++) {
        const char *bad = finite_problem(data[i]);
        if (!bad)
            continue;
        if (info.ndim == 2)
            rt_io_errf(err, errlen, "%s: value at row %lld, column %lld (counting from 0) is %s",
                       name, (long long)(i / cols), (long long)(i % cols), bad);
        else
            rt_io_errf(err, errlen, "%s: value at index %lld (counting from 0) is %s",
                       name, (long long)i, bad);
        free(data);
        return -1;
    }
    out->dtype = info.dtype;
    out->ndim = (int)info.ndim;
    out->shape[0] = rows;
    out->shape[1] = cols;
    out->data = data;
    return 0;
}

/* ---- NPY writer ---- */

typedef struct {
    const double *data;
    int64_t rows, cols;
    int dtype;
    const char *path;
} NpyOut;

static int npy_emit(FILE *f, void *ctx, char *err, size_t errlen) {
    NpyOut *o = ctx;
    char hdr[256];
    size_t n, total;

    n = (size_t)snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%lld, %lld), }",
                         o->dtype == RT_F32 ? "<f4" : "<f8", (long long)o->rows, (long long)o->cols);
    total = (10 + n + 1 + 63) / 64 * 64;        /* magic, version, length, dict, '\n' */
    memset(hdr + n, ' ', total - 10 - n - 1);
    hdr[total - 10 - 1] = '\n';
    n = total - 10;
    if (fwrite("\x93NUMPY\x01\x00", 1, 8, f) != 8 || fputc((int)(n & 0xff), f) == EOF ||
        fputc((int)(n >> 8), f) == EOF || fwrite(hdr, 1, n, f) != n ||
        rt_io_put_values(f, o->data, (size_t)(o->rows * o->cols), o->dtype) != 0) {
        rt_io_errf(err, errlen, "%s: write error: %s", o->path, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- data files ---- */

static int is_npy_name(const char *path) {
    size_t n = strlen(path);
    const char *e = path + n - 4;
    return n >= 4 && e[0] == '.' && (e[1] | 0x20) == 'n' && (e[2] | 0x20) == 'p' && (e[3] | 0x20) == 'y';
}

void rt_array_free(rt_array *a) {
    if (!a)
        return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

int rt_read_data(const char *path, rt_array *out, char *err, size_t errlen) {
    unsigned char *buf;
    size_t len;
    int rc;

    memset(out, 0, sizeof *out);
    if (!path) {
        rt_io_errf(err, errlen, "(null): no file name given");
        return -1;
    }
    if (rt_io_read_file(path, &buf, &len, err, errlen))
        return -1;
    if (is_npy_name(path))
        rc = rt_npy_parse(path, buf, len, out, err, errlen);
    else
        rc = rt_csv_parse(path, (const char *)buf, len, out, err, errlen);
    free(buf);
    return rc;
}

int rt_write_data(const char *path, const double *data, int64_t rows, int64_t cols, int dtype,
                  char *err, size_t errlen) {
    NpyOut o;

    if (!path) {
        rt_io_errf(err, errlen, "(null): no file name given");
        return -1;
    }
    if (dtype != RT_F32 && dtype != RT_F64) {
        rt_io_errf(err, errlen, "%s: invalid dtype %d (expected RT_F32 or RT_F64)", path, dtype);
        return -1;
    }
    if (rows < 1 || cols < 1) {
        rt_io_errf(err, errlen, "%s: nothing to write: %lldx%lld values (need at least one row and column)",
                   path, (long long)rows, (long long)cols);
        return -1;
    }
    if (rows > INT64_MAX / cols || (uint64_t)(rows * cols) > SIZE_MAX / sizeof(double)) {
        rt_io_errf(err, errlen, "%s: %lldx%lld values are too many", path, (long long)rows, (long long)cols);
        return -1;
    }
    if (!data) {
        rt_io_errf(err, errlen, "%s: no data given (NULL)", path);
        return -1;
    }
    if (!is_npy_name(path))
        return rt_io_write_csv(path, data, rows, cols, dtype, err, errlen);
    o.data = data;
    o.rows = rows;
    o.cols = cols;
    o.dtype = dtype;
    o.path = path;
    return rt_io_write_atomic(path, npy_emit, &o, err, errlen);
}

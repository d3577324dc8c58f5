/* runtime/safetensors.c: safetensors checkpoint reader and writer.
 *
 * Input:  a safetensors file or buffer: an 8-byte little-endian header size N, N bytes of JSON
 *         {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, ...,
 *          "__metadata__": {"key": "value", ...}}, then the data buffer that the offsets index.
 * Output: an rt_tensorfile (tensors converted to double, in header order, plus metadata), or an
 *         error message that starts with the file name and names the tensor or header byte.
 *         The writer stores F32/F64 little endian, the header padded with spaces to a multiple
 *         of 8 bytes, tensors contiguous in order, through the atomic writer in npy.c.
 *
 * The reader checks everything: sizes, JSON syntax (a small strict parser: depth limit 64,
 * UTF-8 validated, \uXXXX escapes with surrogate pairs), dtypes (F32 and F64 only), shapes
 * (0 to 4 dims, no overflow), data offsets (exact sizes, inside the buffer, contiguous in header
 * order, covering the whole buffer), duplicate names and metadata types.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "rt_io.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define ST_MAX_HEADER 100000000ULL   /* 100 MB, as in the reference implementation */
#define ST_MAX_DEPTH 64

/* ---- a small strict JSON parser over the header bytes ---- */

typedef struct {
    const char *name;                       /* file name for messages */
    const unsigned char *s, *p, *end;       /* header text and position */
    char *err;
    size_t errlen;
} J;

static int jfail(J *j, const char *what) {
    rt_io_errf(j->err, j->errlen, "%s: JSON syntax error in the header at byte %lld: %s",
               j->name, (long long)(j->p - j->s), what);
    return -1;
}

static int joom(J *j) {
    rt_io_errf(j->err, j->errlen, "%s: out of memory reading the header", j->name);
    return -1;
}

static int jpeek(J *j) {
    return j->p < j->end ? *j->p : -1;
}

static void jws(J *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int jlit(J *j, const char *lit) {
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) >= n && memcmp(j->p, lit, n) == 0) {
        j->p += n;
        return 1;
    }
    return 0;
}

/* Length (1 to 4) of the valid UTF-8 sequence at p, or 0 if it is not valid. */
static int utf8_seq(const unsigned char *p, const unsigned char *end) {
    uint32_t c = p[0], min;
    int n, i;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, c &= 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, c &= 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, c &= 0x07, min = 0x10000;
    else
        return 0;
    if (end - p < n)
        return 0;
    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (p[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    return n;
}

static int utf8_valid(const char *s) {
    const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
    while (p < end) {
        int k = utf8_seq(p, end);
        if (!k)
            return 0;
        p += k;
    }
    return 1;
}

static int hex4(const unsigned char *p, uint32_t *v) {
    int i;
    *v = 0;
    for (i = 0; i < 4; i++) {
        int c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        *v = *v << 4 | (uint32_t)d;
    }
    return 0;
}

static size_t put_utf8(char *o, uint32_t c) {
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xc0 | c >> 6);
        o[1] = (char)(0x80 | (c & 0x3f));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xe0 | c >> 12);
        o[1] = (char)(0x80 | (c >> 6 & 0x3f));
        o[2] = (char)(0x80 | (c & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | c >> 18);
    o[1] = (char)(0x80 | (c >> 12 & 0x3f));
    o[2] = (char)(0x80 | (c >> 6 & 0x3f));
    o[3] = (char)(0x80 | (c & 0x3f));
    return 4;
}

/* A string. With out, its decoded text is malloc'ed into *out (NUL-terminated, length *outn,
 * which can contain NUL bytes from \u0000); without, it is only checked. */
static int jstring(J *j, char **out, size_t *outn) {
    const unsigned char *b, *q;
    char *o = NULL;
    size_t n = 0;

    if (jpeek(j) != '"')
        return jfail(j, "expected a string");
    b = j->p + 1;
    for (q = b; q < j->end && *q != '"'; q++)
        if (*q == '\\' && q + 1 < j->end)
            q++;
    if (q >= j->end)
        return jfail(j, "unterminated string");
    if (out && !(o = malloc((size_t)(q - b) + 1)))   /* decoding never makes text longer */
        return joom(j);
    j->p = b;
    while (j->p < q) {
        unsigned c = *j->p;
        if (c == '\\') {
            uint32_t u, lo;
            char tmp[4];
            if (j->p + 1 >= q)
                goto bad_escape;
            switch (j->p[1]) {
            case '"':  tmp[0] = '"'; break;
            case '\\': tmp[0] = '\\'; break;
            case '/':  tmp[0] = '/'; break;
            case 'b':  tmp[0] = '\b'; break;
            case 'f':  tmp[0] = '\f'; break;
            case 'n':  tmp[0] = '\n'; break;
            case 'r':  tmp[0] = '\r'; break;
            case 't':  tmp[0] = '\t'; break;
            case 'u':
                if (q - j->p < 6 || hex4(j->p + 2, &u))
                    goto bad_escape;
                if (u >= 0xdc00 && u <= 0xdfff) {
                    jfail(j, "lone low surrogate in \\u escape");
                    goto fail;
                }
                if (u >= 0xd800 && u <= 0xdbff) {
                    if (q - j->p < 12 || j->p[6] != '\\' || j->p[7] != 'u' || hex4(j->p + 8, &lo) ||
                        lo < 0xdc00 || lo > 0xdfff) {
                        jfail(j, "high surrogate in \\u escape without a low surrogate after it");
                        goto fail;
                    }
                    u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
                    j->p += 6;
                }
                if (o)
                    n += put_utf8(o + n, u);
                j->p += 6;
                continue;
            default:
                goto bad_escape;
            }
            if (o)
                o[n++] = tmp[0];
            j->p += 2;
        } else if (c < 0x20) {
            jfail(j, "control character in string (must be escaped)");
            goto fail;
        } else {
            int k = utf8_seq(j->p, q);
            if (!k) {
                jfail(j, "invalid UTF-8 in string");
                goto fail;
            }
            if (o)
                memcpy(o + n, j->p, (size_t)k), n += (size_t)k;
            j->p += k;
        }
    }
    j->p++;   /* the closing quote */
    if (o) {
        o[n] = '\0';
        *out = o;
        *outn = n;
    }
    return 0;

bad_escape:
    jfail(j, "invalid escape in string");
fail:
    free(o);
    return -1;
}

enum { JN_INT, JN_NEG, JN_BIG, JN_FRAC };   /* kinds of number */

/* A number. If it is a non-negative integer that fits in int64, *kind is JN_INT and *v its value. */
static int jnumber(J *j, int64_t *v, int *kind) {
    int neg = 0, big = 0, frac = 0;
    int64_t x = 0;

    if (jpeek(j) == '-')
        neg = 1, j->p++;
    if (jpeek(j) == '0') {
        j->p++;
        if (jpeek(j) >= '0' && jpeek(j) <= '9')
            return jfail(j, "leading zeros are not allowed in numbers");
    } else if (jpeek(j) >= '1' && jpeek(j) <= '9') {
        while (jpeek(j) >= '0' && jpeek(j) <= '9') {
            int d = *j->p++ - '0';
            if (x > (INT64_MAX - d) / 10)
                big = 1;
            else
                x = x * 10 + d;
        }
    } else {
        return jfail(j, "invalid number");
    }
    if (jpeek(j) == '.') {
        j->p++;
        if (jpeek(j) < '0' || jpeek(j) > '9')
            return jfail(j, "expected a digit after '.'");
        while (jpeek(j) >= '0' && jpeek(j) <= '9')
            j->p++;
        frac = 1;
    }
    if (jpeek(j) == 'e' || jpeek(j) == 'E') {
        j->p++;
        if (jpeek(j) == '+' || jpeek(j) == '-')
            j->p++;
        if (jpeek(j) < '0' || jpeek(j) > '9')
            return jfail(j, "expected a digit in the exponent");
        while (jpeek(j) >= '0' && jpeek(j) <= '9')
            j->p++;
        frac = 1;
    }
    *kind = frac ? JN_FRAC : neg ? JN_NEG : big ? JN_BIG : JN_INT;
    *v = x;
    return 0;
}

/* Check and skip any value; depth is its nesting level (the header object is level 1). */
static int jskip(J *j, int depth) {
    int c;
    if (depth > ST_MAX_DEPTH)
        return jfail(j, "nesting is deeper than 64 levels");
    jws(j);
    c = jpeek(j);
    if (c == '{' || c == '[') {
        int close = c == '{' ? '}' : ']';
        j->p++;
        jws(j);
        if (jpeek(j) == close) {
            j->p++;
            return 0;
        }
        for (;;) {
            jws(j);
            if (c == '{') {
                if (jstring(j, NULL, NULL))
                    return -1;
                jws(j);
                if (jpeek(j) != ':')
                    return jfail(j, "expected ':'");
                j->p++;
            }
            if (jskip(j, depth + 1))
                return -1;
            jws(j);
            if (jpeek(j) == ',') {
                j->p++;
                continue;
            }
            if (jpeek(j) == close) {
                j->p++;
                return 0;
            }
            return jfail(j, c == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    if (c == '"')
        return jstring(j, NULL, NULL);
    if (c == '-' || (c >= '0' && c <= '9')) {
        int64_t v;
        int kind;
        return jnumber(j, &v, &kind);
    }
    if (jlit(j, "true") || jlit(j, "false") || jlit(j, "null"))
        return 0;
    return jfail(j, c < 0 ? "unexpected end of header" : "expected a value");
}

/* After a member: ',' (more follow) returns 1, the closing bracket returns 0. */
static int jnext(J *j, int close) {
    jws(j);
    if (jpeek(j) == ',') {
        j->p++;
        jws(j);
        return 1;
    }
    if (jpeek(j) == close) {
        j->p++;
        return 0;
    }
    return jfail(j, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
}

/* ---- reading the header into an rt_tensorfile ---- */

typedef struct {
    J j;
    rt_tensorfile *out;
    int cap, mcap;
    uint64_t (*off)[2];     /* data_offsets of out->t[i] */
} St;

/* An error about tensor tname: "file: tensor 'tname': ...". Returns -1. */
static int terr(St *st, const char *tname, const char *fmt, ...) {
    char msg[256], q[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    rt_io_errf(st->j.err, st->j.errlen, "%s: tensor '%s': %s", st->j.name,
               rt_io_quote(q, sizeof q, tname, strlen(tname)), msg);
    return -1;
}

static const char *shape_text(char *buf, size_t len, const int64_t *shape, int ndim) {
    size_t n = 0;
    int i;
    n += (size_t)snprintf(buf, len, "[");
    for (i = 0; i < ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < len)
        snprintf(buf + n, len - n, "]");
    return buf;
}

/* [n, ...] of non-negative integers: stores them in v (at most max), their count in *count. */
static int jint_array(St *st, const char *tname, const char *what, int64_t *v, int max, int *count) {
    J *j = &st->j;
    *count = 0;
    if (jpeek(j) != '[')
        return terr(st, tname, "'%s' must be an array of integers", what);
    j->p++;
    jws(j);
    if (jpeek(j) == ']') {
        j->p++;
        return 0;
    }
    for (;;) {
        int64_t x;
        int kind, more;
        int c = jpeek(j);
        if (c != '-' && (c < '0' || c > '9')) {
            if (c >= 0 && strchr("\"[{tfn", c))
                return terr(st, tname, "'%s' must be an array of integers", what);
            return jfail(j, "expected a number");
        }
        if (jnumber(j, &x, &kind))
            return -1;
        if (kind != JN_INT)
            return terr(st, tname, "'%s' must hold non-negative integers below 2^63%s", what,
                        kind == JN_FRAC ? " (found a fraction or exponent)" :
                        kind == JN_NEG ? " (found a negative number)" : " (found a larger one)");
        if (*count == max)
            return max == 2 ? terr(st, tname, "'%s' must have 2 entries [begin, end]", what)
                            : terr(st, tname, "'%s' has more than %d dimensions", what, max);
        v[(*count)++] = x;
        if ((more = jnext(j, ']')) < 0)
            return -1;
        if (!more)
            return 0;
    }
}

static int parse_tensor(St *st, char *name) {
    J *j = &st->j;
    rt_tensorfile *out = st->out;
    rt_tensor *t;
    int have_dtype = 0, have_shape = 0, have_off = 0, ndim = 0, noff = 0, i, more;
    int64_t off[2] = {0, 0};
    size_t esize;
    char shp[128];

    if (out->n == st->cap) {
        int cap = st->cap ? st->cap * 2 : 16;
        rt_tensor *nt;
        uint64_t (*no)[2];
        if (st->cap > (1 << 28) || !(nt = realloc(out->t, (size_t)cap * sizeof *nt))) {
            free(name);
            return joom(j);
        }
        out->t = nt;
        if (!(no = realloc(st->off, (size_t)cap * sizeof *no))) {
            free(name);
            return joom(j);
        }
        st->off = no;
        st->cap = cap;
    }
    t = &out->t[out->n++];
    memset(t, 0, sizeof *t);
    t->name = name;            /* from here on, rt_st_free frees it */

    if (jpeek(j) != '{')
        return terr(st, name, "expected an object with dtype, shape and data_offsets");
    j->p++;
    jws(j);
    more = jpeek(j) != '}';
    if (!more)
        j->p++;
    while (more) {
        char *key, *dt;
        size_t keyn, dtn;
        if (jstring(j, &key, &keyn))
            return -1;
        jws(j);
        if (jpeek(j) != ':') {
            free(key);
            return jfail(j, "expected ':'");
        }
        j->p++;
        jws(j);
        if (!strcmp(key, "dtype")) {
            free(key);
            if (have_dtype++)
                return terr(st, name, "duplicate key 'dtype'");
            if (jpeek(j) != '"')
                return terr(st, name, "'dtype' must be a string");
            if (jstring(j, &dt, &dtn))
                return -1;
            if (!strcmp(dt, "F32") && dtn == 3) {
                t->dtype = RT_F32;
            } else if (!strcmp(dt, "F64") && dtn == 3) {
                t->dtype = RT_F64;
            } else {
                char q[64];
                terr(st, name, "unsupported dtype '%s' (expected F32 or F64)", rt_io_quote(q, sizeof q, dt, dtn));
                free(dt);
                return -1;
            }
            free(dt);
        } else if (!strcmp(key, "shape")) {
            free(key);
            if (have_shape++)
                return terr(st, name, "duplicate key 'shape'");
            if (jint_array(st, name, "shape", t->shape, 4, &ndim))
                return -1;
            t->ndim = ndim;
        } else if (!strcmp(key, "data_offsets")) {
            free(key);
            if (have_off++)
                return terr(st, name, "duplicate key 'data_offsets'");
            if (jint_array(st, name, "data_offsets", off, 2, &noff))
                return -1;
            if (noff != 2)
                return terr(st, name, "'data_offsets' must have 2 entries [begin, end]");
        } else {
            free(key);          /* unknown keys are allowed and ignored */
            if (jskip(j, 3))
                return -1;
        }
        if ((more = jnext(j, '}')) < 0)
            return -1;
    }
    if (!have_dtype || !have_shape || !have_off)
        return terr(st, name, "missing '%s'", !have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets");

    t->numel = 1;
    for (i = 0; i < ndim; i++) {
        if (t->shape[i] != 0 && t->numel > INT64_MAX / t->shape[i])
            return terr(st, name, "shape %s overflows (more than 2^63 elements)",
                        shape_text(shp, sizeof shp, t->shape, ndim));
        t->numel *= t->shape[i];
    }
    esize = t->dtype == RT_F32 ? 4 : 8;
    if (t->numel > INT64_MAX / (int64_t)esize)
        return terr(st, name, "shape %s is too large (its size in bytes overflows)",
                    shape_text(shp, sizeof shp, t->shape, ndim));
    st->off[out->n - 1][0] = (uint64_t)off[0];
    st->off[out->n - 1][1] = (uint64_t)off[1];
    return 0;
}

static int parse_meta(St *st) {
    J *j = &st->j;
    rt_tensorfile *out = st->out;
    char q[64];
    int more;

    if (jlit(j, "null"))
        return 0;
    if (jpeek(j) != '{') {
        rt_io_errf(j->err, j->errlen, "%s: __metadata__ must be an object of strings", j->name);
        return -1;
    }
    j->p++;
    jws(j);
    more = jpeek(j) != '}';
    if (!more)
        j->p++;
    while (more) {
        char *key, *val;
        size_t keyn, valn;
        if (jstring(j, &key, &keyn))
            return -1;
        jws(j);
        if (jpeek(j) != ':') {
            free(key);
            return jfail(j, "expected ':'");
        }
        j->p++;
        jws(j);
        if (jpeek(j) != '"') {
            rt_io_errf(j->err, j->errlen, "%s: __metadata__ value for '%s' is not a string", j->name,
                       rt_io_quote(q, sizeof q, key, keyn));
            free(key);
            return -1;
        }
        if (jstring(j, &val, &valn)) {
            free(key);
            return -1;
        }
        if (strlen(key) != keyn || strlen(val) != valn) {
            rt_io_errf(j->err, j->errlen, "%s: __metadata__ entry '%s' contains a NUL character", j->name,
                       rt_io_quote(q, sizeof q, key, keyn));
            free(key);
            free(val);
            return -1;
        }
        if (out->nmeta == st->mcap) {
            int cap = st->mcap ? st->mcap * 2 : 8;
            char **nk, **nv;
            if (st->mcap > (1 << 28) || !(nk = realloc(out->meta_keys, (size_t)cap * sizeof *nk))) {
                free(key);
                free(val);
                return joom(j);
            }
            out->meta_keys = nk;
            if (!(nv = realloc(out->meta_vals, (size_t)cap * sizeof *nv))) {
                free(key);
                free(val);
                return joom(j);
            }
            out->meta_vals = nv;
            st->mcap = cap;
        }
        out->meta_keys[out->nmeta] = key;
        out->meta_vals[out->nmeta] = val;
        out->nmeta++;
        if ((more = jnext(j, '}')) < 0)
            return -1;
    }
    return 0;
}

static int parse_header(St *st) {
    J *j = &st->j;
    int seen_meta = 0, more;
    char q[64];

    jws(j);
    if (jpeek(j) != '{')
        return jfail(j, "the header must be a JSON object (expected '{')");
    j->p++;
    jws(j);
    more = jpeek(j) != '}';
    if (!more)
        j->p++;
    while (more) {
        char *key;
        size_t keyn;
        if (jstring(j, &key, &keyn))
            return -1;
        jws(j);
        if (jpeek(j) != ':') {
            free(key);
            return jfail(j, "expected ':'");
        }
        j->p++;
        jws(j);
        if (strlen(key) != keyn) {
            rt_io_errf(j->err, j->errlen, "%s: tensor name '%s' contains a NUL character", j->name,
                       rt_io_quote(q, sizeof q, key, keyn));
            free(key);
            return -1;
        }
        if (!strcmp(key, "__metadata__")) {
            free(key);
            if (seen_meta++) {
                rt_io_errf(j->err, j->errlen, "%s: duplicate __metadata__", j->name);
                return -1;
            }
            if (parse_meta(st))
                return -1;
        } else if (parse_tensor(st, key)) {
            return -1;
        }
        if ((more = jnext(j, '}')) < 0)
            return -1;
    }
    jws(j);
    if (j->p != j->end)
        return jfail(j, "unexpected text after the JSON object");
    return 0;
}

static int cmp_strp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first name that occurs twice in names[0..n), or NULL; *oom on allocation failure. */
static const char *find_duplicate(const char *const *names, int n, int *oom) {
    const char **s;
    const char *dup = NULL;
    int i;
    *oom = 0;
    if (n < 2)
        return NULL;
    if (!(s = malloc((size_t)n * sizeof *s))) {
        *oom = 1;
        return NULL;
    }
    memcpy(s, names, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_strp);
    for (i = 1; i < n && !dup; i++)
        if (!strcmp(s[i - 1], s[i]))
            dup = s[i];
    free(s);
    return dup;
}

void rt_st_free(rt_tensorfile *f) {
    int i;
    if (!f)
        return;
    for (i = 0; i < f->n; i++) {
        free(f->t[i].name);
        free(f->t[i].data);
    }
    free(f->t);
    for (i = 0; i < f->nmeta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    memset(f, 0, sizeof *f);
}

/* Everything after the JSON parse: names, offsets, and the conversion of the data. */
static int check_and_load(St *st, const unsigned char *data, uint64_t datalen) {
    rt_tensorfile *out = st->out;
    const char *dup;
    uint64_t prev = 0;
    const char **names;
    char q[64], shp[128];
    int i, oom;

    if (out->n > 1) {
        if (!(names = malloc((size_t)out->n * sizeof *names)))
            return joom(&st->j);
        for (i = 0; i < out->n; i++)
            names[i] = out->t[i].name;
        dup = find_duplicate(names, out->n, &oom);
        if (dup)
            rt_io_errf(st->j.err, st->j.errlen, "%s: duplicate tensor name '%s'", st->j.name,
                       rt_io_quote(q, sizeof q, dup, strlen(dup)));
        free(names);   /* dup points into out, not into names */
        if (dup)
            return -1;
        if (oom)
            return joom(&st->j);
    }
    dup = find_duplicate((const char *const *)out->meta_keys, out->nmeta, &oom);
    if (dup) {
        rt_io_errf(st->j.err, st->j.errlen, "%s: duplicate __metadata__ key '%s'", st->j.name,
                   rt_io_quote(q, sizeof q, dup, strlen(dup)));
        return -1;
    }
    if (oom)
        return joom(&st->j);

    for (i = 0; i < out->n; i++) {
        rt_tensor *t = &out->t[i];
        uint64_t b = st->off[i][0], e = st->off[i][1];
        uint64_t nbytes = (uint64_t)t->numel * (t->dtype == RT_F32 ? 4 : 8);
        if (b > e)
            return terr(st, t->name, "data_offsets [%llu, %llu] end before they begin",
                        (unsigned long long)b, (unsigned long long)e);
        if (e - b != nbytes)
            return terr(st, t->name, "data_offsets [%llu, %llu] hold %llu bytes but shape %s of %s needs %llu",
                        (unsigned long long)b, (unsigned long long)e, (unsigned long long)(e - b),
                        shape_text(shp, sizeof shp, t->shape, t->ndim), t->dtype == RT_F32 ? "F32" : "F64",
                        (unsigned long long)nbytes);
        if (e > datalen)
            return terr(st, t->name, "data_offsets [%llu, %llu] are out of the data buffer (%llu bytes; "
                        "is the file truncated?)", (unsigned long long)b, (unsigned long long)e,
                        (unsigned long long)datalen);
        if (b < prev)
            return terr(st, t->name, "data_offsets [%llu, %llu] overlap the previous tensor or are out of "
                        "order (expected to begin at byte %llu)", (unsigned long long)b,
                        (unsigned long long)e, (unsigned long long)prev);
        if (b > prev)
            return terr(st, t->name, "data_offsets [%llu, %llu] leave a gap or are out of order (expected to "
                        "begin at byte %llu; tensors must be contiguous, in header order)", (unsigned long long)b, (unsigned long long)e,
                        (unsigned long long)prev);
        prev = e;
    }
    if (prev != datalen) {
        rt_io_errf(st->j.err, st->j.errlen, "%s: the data buffer has %llu bytes but the tensors use %llu",
                   st->j.name, (unsigned long long)datalen, (unsigned long long)prev);
        return -1;
    }
    for (i = 0; i < out->n; i++) {
        rt_tensor *t = &out->t[i];
        t->data = malloc((t->numel ? (size_t)t->numel : 1) * sizeof(double));
        if (!t->data)
            return joom(&st->j);
        rt_io_get_values(data + st->off[i][0], (size_t)t->numel, t->dtype, t->data);
    }
    return 0;
}

int rt_st_parse(const char *name, const unsigned char *buf, size_t len, rt_tensorfile *out,
                char *err, size_t errlen) {
    St st;
    uint64_t hsize = 0;
    int i, rc;

    memset(out, 0, sizeof *out);
    if (!name)
        name = "(buffer)";
    if (len < 8) {
        rt_io_errf(err, errlen, "%s: file is too short to be safetensors (%zu bytes; the 8-byte header "
                   "size is missing)", name, len);
        return -1;
    }
    for (i = 7; i >= 0; i--)
        hsize = hsize << 8 | buf[i];
    if (hsize > ST_MAX_HEADER) {
        rt_io_errf(err, errlen, "%s: header size %llu is absurd (over 100 MB); not a safetensors file?",
                   name, (unsigned long long)hsize);
        return -1;
    }
    if (hsize > len - 8) {
        rt_io_errf(err, errlen, "%s: header size %llu is larger than the rest of the file (%zu bytes); "
                   "is the file truncated?", name, (unsigned long long)hsize, len - 8);
        return -1;
    }
    memset(&st, 0, sizeof st);
    st.j.name = name;
    st.j.s = st.j.p = buf + 8;
    st.j.end = buf + 8 + hsize;
    st.j.err = err;
    st.j.errlen = errlen;
    st.out = out;
    rc = parse_header(&st);
    if (rc == 0)
        rc = check_and_load(&st, buf + 8 + hsize, len - 8 - hsize);
    free(st.off);
    if (rc)
        rt_st_free(out);
    return rc;
}

int rt_st_read(const char *path, rt_tensorfile *out, char *err, size_t errlen) {
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
    rc = rt_st_parse(path, buf, len, out, err, errlen);
    free(buf);
    return rc;
}

const rt_tensor *rt_st_find(const rt_tensorfile *f, const char *name) {
    int i;
    if (!f || !name)
        return NULL;
    for (i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name))
            return &f->t[i];
    return NULL;
}

const char *rt_st_meta(const rt_tensorfile *f, const char *key) {
    int i;
    if (!f || !key)
        return NULL;
    for (i = 0; i < f->nmeta; i++)
        if (!strcmp(f->meta_keys[i], key))
            return f->meta_vals[i];
    return NULL;
}

/* ---- writer ---- */

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} Buf;

static void bput(Buf *b, const char *s, size_t n) {
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *np;
        while (cap < b->n + n + 1)
            cap *= 2;
        if (!(np = realloc(b->p, cap))) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void bputs(Buf *b, const char *s) {
    bput(b, s, strlen(s));
}

static void bint(Buf *b, long long v) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%lld", v);
    bputs(b, tmp);
}

static void bjson(Buf *b, const char *s) {
    bputs(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char tmp[8];
        if (c == '"' || c == '\\') {
            tmp[0] = '\\', tmp[1] = (char)c, tmp[2] = '\0';
        } else if (c < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
        } else {
            tmp[0] = (char)c, tmp[1] = '\0';
        }
        bputs(b, tmp);
    }
    bputs(b, "\"");
}

typedef struct {
    const char *path;
    const rt_tensor *t;
    int n;
    Buf hdr;
} StOut;

static int st_emit(FILE *f, void *ctx, char *err, size_t errlen) {
    StOut *o = ctx;
    unsigned char len8[8];
    uint64_t hs = o->hdr.n;
    int i;
    for (i = 0; i < 8; i++, hs >>= 8)
        len8[i] = (unsigned char)(hs & 0xff);
    if (fwrite(len8, 1, 8, f) != 8 || fwrite(o->hdr.p, 1, o->hdr.n, f) != o->hdr.n)
        goto fail;
    for (i = 0; i < o->n; i++)
        if (rt_io_put_values(f, o->t[i].data, (size_t)o->t[i].numel, o->t[i].dtype))
            goto fail;
    return 0;
fail:
    rt_io_errf(err, errlen, "%s: write error: %s", o->path, strerror(errno));
    return -1;
}

/* Check the caller's tensors and metadata before writing anything. */
static int check_write_args(const char *path, const rt_tensor *t, int n, const char *const *mk,
                            const char *const *mv, int nmeta, char *err, size_t errlen) {
    uint64_t total = 0;
    char q[64];
    int i, k, oom;
    const char *dup;
    const char **names;

    if (n < 0 || nmeta < 0 || (n > 0 && !t) || (nmeta > 0 && (!mk || !mv))) {
        rt_io_errf(err, errlen, "%s: invalid arguments (n=%d, nmeta=%d)", path, n, nmeta);
        return -1;
    }
    for (i = 0; i < n; i++) {
        const rt_tensor *x = &t[i];
        int64_t numel = 1;
        const char *nm = x->name ? rt_io_quote(q, sizeof q, x->name, strlen(x->name)) : "";
        if (!x->name || !utf8_valid(x->name) || !strcmp(x->name, "__metadata__")) {
            rt_io_errf(err, errlen, "%s: tensor %d: name '%s' is %s", path, i, nm,
                       !x->name ? "missing (NULL)" : !strcmp(x->name, "__metadata__") ? "reserved" : "not valid UTF-8");
            return -1;
        }
        if (x->dtype != RT_F32 && x->dtype != RT_F64) {
            rt_io_errf(err, errlen, "%s: tensor '%s': invalid dtype %d (expected RT_F32 or RT_F64)", path, nm, x->dtype);
            return -1;
        }
        if (x->ndim < 0 || x->ndim > 4) {
            rt_io_errf(err, errlen, "%s: tensor '%s': ndim %d is not in 0..4", path, nm, x->ndim);
            return -1;
        }
        for (k = 0; k < x->ndim; k++) {
            if (x->shape[k] < 0 || (x->shape[k] && numel > INT64_MAX / 8 / x->shape[k])) {
                rt_io_errf(err, errlen, "%s: tensor '%s': shape dimension %d (%lld) is negative or too large",
                           path, nm, k, (long long)x->shape[k]);
                return -1;
            }
            numel *= x->shape[k];
        }
        if (numel != x->numel) {
            rt_io_errf(err, errlen, "%s: tensor '%s': numel %lld does not match its shape (%lld elements)",
                       path, nm, (long long)x->numel, (long long)numel);
            return -1;
        }
        if (numel > 0 && !x->data) {
            rt_io_errf(err, errlen, "%s: tensor '%s': no data (NULL)", path, nm);
            return -1;
        }
        total += (uint64_t)numel * (x->dtype == RT_F32 ? 4 : 8);
        if (total > (uint64_t)INT64_MAX) {
            rt_io_errf(err, errlen, "%s: tensors are too large in total", path);
            return -1;
        }
    }
    for (i = 0; i < nmeta; i++) {
        if (!mk[i] || !mv[i] || !utf8_valid(mk[i]) || !utf8_valid(mv[i])) {
            rt_io_errf(err, errlen, "%s: metadata entry %d: key or value is NULL or not valid UTF-8", path, i);
            return -1;
        }
    }
    if (n > 1) {
        if (!(names = malloc((size_t)n * sizeof *names))) {
            rt_io_errf(err, errlen, "%s: out of memory", path);
            return -1;
        }
        for (i = 0; i < n; i++)
            names[i] = t[i].name;
        dup = find_duplicate(names, n, &oom);
        free(names);
        if (dup || oom) {
            if (dup)
                rt_io_errf(err, errlen, "%s: duplicate tensor name '%s'", path, rt_io_quote(q, sizeof q, dup, strlen(dup)));
            else
                rt_io_errf(err, errlen, "%s: out of memory", path);
            return -1;
        }
    }
    dup = find_duplicate(mk, nmeta, &oom);
    if (dup || oom) {
        if (dup)
            rt_io_errf(err, errlen, "%s: duplicate metadata key '%s'", path, rt_io_quote(q, sizeof q, dup, strlen(dup)));
        else
            rt_io_errf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    return 0;
}

int rt_st_write(const char *path, const rt_tensor *t, int n, const char *const *meta_keys,
                const char *const *meta_vals, int nmeta, char *err, size_t errlen) {
    StOut o;
    uint64_t off = 0;
    int i, k, rc;

    if (!path) {
        rt_io_errf(err, errlen, "(null): no file name given");
        return -1;
    }
    if (check_write_args(path, t, n, meta_keys, meta_vals, nmeta, err, errlen))
        return -1;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.t = t;
    o.n = n;
    bputs(&o.hdr, "{");
    if (nmeta > 0) {
        bputs(&o.hdr, "\"__metadata__\":{");
        for (i = 0; i < nmeta; i++) {
            if (i)
                bputs(&o.hdr, ",");
            bjson(&o.hdr, meta_keys[i]);
            bputs(&o.hdr, ":");
            bjson(&o.hdr, meta_vals[i]);
        }
        bputs(&o.hdr, "}");
    }
    for (i = 0; i < n; i++) {
        uint64_t nbytes = (uint64_t)t[i].numel * (t[i].dtype == RT_F32 ? 4 : 8);
        if (i || nmeta > 0)
            bputs(&o.hdr, ",");
        bjson(&o.hdr, t[i].name);
        bputs(&o.hdr, t[i].dtype == RT_F32 ? ":{\"dtype\":\"F32\",\"shape\":[" : ":{\"dtype\":\"F64\",\"shape\":[");
        for (k = 0; k < t[i].ndim; k++) {
            if (k)
                bputs(&o.hdr, ",");
            bint(&o.hdr, (long long)t[i].shape[k]);
        }
        bputs(&o.hdr, "],\"data_offsets\":[");
        bint(&o.hdr, (long long)off);
        bputs(&o.hdr, ",");
        bint(&o.hdr, (long long)(off + nbytes));
        bputs(&o.hdr, "]}");
        off += nbytes;
    }
    bputs(&o.hdr, "}");
    while (!o.hdr.oom && o.hdr.n % 8 != 0)   /* 8 + header size is then a multiple of 8 */
        bputs(&o.hdr, " ");
    if (o.hdr.oom) {
        free(o.hdr.p);
        rt_io_errf(err, errlen, "%s: out of memory building the header", path);
        return -1;
    }
    if (o.hdr.n > ST_MAX_HEADER) {
        free(o.hdr.p);
        rt_io_errf(err, errlen, "%s: header would be %zu bytes, over the 100 MB limit of readers", path, o.hdr.n);
        return -1;
    }
    rc = rt_io_write_atomic(path, st_emit, &o, err, errlen);
    free(o.hdr.p);
    return rc;
}

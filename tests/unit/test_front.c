/* tests/unit/test_front.c: lexer, parser, semantic analysis and diagnostics.
 * - every example compiles; parameter counts equal formulas computed here, independently
 *   of the compiler; the width after every layer is the input's width
 * - the invertibility analysis accepts invertible graphs and rejects the others with the
 *   right message at the right place
 * - truncations and byte mutations of every example never crash (the ASan build checks
 *   memory) and every rejection carries a located error */
#include "t.h"

#include <stdlib.h>

#include "front.h"

typedef struct {
    arena       ar;
    diag_ctx    dc;
    sema_result res;
    int         nerr;
} comp;

static void compile_text(comp *c, const char *text) {
    arena_init(&c->ar);
    diag_init(&c->dc, &c->ar);
    memset(&c->res, 0, sizeof c->res);
    c->nerr = front_compile_text(&c->dc, "t.flow", text, strlen(text), &c->res, NULL);
}

static void compile_path(comp *c, const char *path) {
    arena_init(&c->ar);
    diag_init(&c->dc, &c->ar);
    memset(&c->res, 0, sizeof c->res);
    c->nerr = front_compile_file(&c->dc, path, &c->res, NULL);
}

static void done(comp *c) { arena_free(&c->ar); }

static const char *first_error(comp *c) {
    for (int i = 0; i < c->dc.nd; i++)
        if (c->dc.d[i].kind == DIAG_ERROR) return c->dc.d[i].msg;
    return "";
}

/* parameters of a dense net in -> hidden... -> out, with biases */
static long long mlp(int in, const int *h, int nh, int out) {
    long long n = 0;
    int w = in;
    for (int i = 0; i < nh; i++) { n += (long long)w * h[i] + h[i]; w = h[i]; }
    return n + (long long)w * out + out;
}

static void check_example(const char *path, long long want_params, int D) {
    comp c;
    compile_path(&c, path);
    CHECK(c.nerr == 0, "%s: %s", path, first_error(&c));
    CHECK(c.res.nflows == 1, "%s", path);
    if (c.nerr == 0 && c.res.nflows == 1) {
        ir_graph *g = c.res.flows[0];
        CHECK(ir_param_count(g) == want_params, "%s: %lld parameters, expected %lld", path,
              (long long)ir_param_count(g), want_params);
        CHECK(g->nodes[g->output].width == D, "%s", path);
        CHECK(g->nodes[g->input].width == D, "%s", path);
        long long sum = 0;
        for (int i = 0; i < g->nlayers; i++) {
            sum += g->layers[i].nparams;
            if (!g->graph_form) CHECK(g->layers[i].width_after == D, "%s layer %d", path, i);
        }
        CHECK(sum == want_params, "%s: layer counts add up to %lld", path, sum);
    }
    done(&c);
}

TEST(examples_parameter_counts) {
    int h64[] = { 64, 64 }, h128[] = { 128, 128 }, h32[] = { 32 };
    /* moons: actnorm on 2 dims, 8 couplings conditioning on 1 dim, predicting scale+shift of 1 */
    check_example("examples/moons.flow", 2 * 2 + 8 * mlp(1, h64, 2, 2), 2);
    /* maf8: 5 MADE nets 8 -> 128 -> 128 -> 16 (dense storage of masked matrices) */
    check_example("examples/maf.flow", 5 * mlp(8, h128, 2, 16), 8);
    /* glow16: 4 x (actnorm 2*16 + LU 16*16 + bias 16 + coupling 8 -> 16) */
    check_example("examples/glow_dense.flow", 4 * (2 * 16 + 16 * 16 + 16 + mlp(8, h128, 2, 16)), 16);
    /* cmoons: 6 couplings with 1 conditioning dim + 2 context dims */
    check_example("examples/cmoons.flow", 6 * mlp(1 + 2, h64, 2, 2), 2);
    /* custom: mlp(32) 2 -> 4, actnorm on 2, resmlp(16) 2 -> 16 -> (16 -> 16 -> 16) -> 2 */
    long long res = (2 * 16 + 16) + 2 * (16 * 16 + 16) + (16 * 2 + 2);
    check_example("examples/custom.flow", mlp(2, h32, 1, 4) + 2 * 2 + res, 4);
}

static void expect_ok(const char *text) {
    comp c;
    compile_text(&c, text);
    CHECK(c.nerr == 0, "unexpected error: %s\n%s", first_error(&c), text);
    done(&c);
}

static void expect_error(const char *text, const char *msg, int line, int col) {
    comp c;
    compile_text(&c, text);
    CHECK(c.nerr > 0, "accepted:\n%s", text);
    if (c.nerr > 0) {
        const diag *d = NULL;
        for (int i = 0; i < c.dc.nd && !d; i++) if (c.dc.d[i].kind == DIAG_ERROR) d = &c.dc.d[i];
        CHECK(d && strstr(d->msg, msg), "got '%s', expected '%s'", d ? d->msg : "", msg);
        if (d && line) CHECK(d->loc.line == line && d->loc.col == col, "at %d:%d, expected %d:%d (%s)", d->loc.line,
                             d->loc.col, line, col, d->msg);
    }
    done(&c);
}

TEST(invertibility_analysis) {
    /* a coupling written by hand is invertible */
    expect_ok("flow f {\n input x: f32[4]\n a, b = split x\n s, t = chunk mlp(8)(a) 2\n"
              " b2 = affine b scale=s shift=t\n z = concat a, b2\n output z\n}\n");
    /* the parameter depends on the op's own output */
    expect_error("flow f {\n input x: f32[4]\n a, b = split x [2, 2]\n b2 = affine b scale=mlp(32)(b2)\n"
                 " z = concat a, b2\n output z\n}\n", "cannot be inverted: it depends on 'b2', its own output", 4, 30);
    /* ... on its own input */
    expect_error("flow f {\n input x: f32[4]\n a, b = split x [2, 2]\n b2 = affine b shift=mlp(32)(b)\n"
                 " z = concat a, b2\n output z\n}\n", "its shift depends on 'b', its own input", 4, 7);
    /* two couplings in a chain are invertible ... */
    expect_ok("flow f {\n input x: f32[4]\n a, b = split x [2, 2]\n a2 = actnorm a\n b2 = affine b shift=mlp(8)(a2)\n"
              " a3 = affine a2 shift=mlp(8)(b2)\n z = concat a3, b2\n output z\n}\n");
    /* ... but not when each needs what the other recovers (a deadlock through two ops) */
    expect_error("flow f {\n input x: f32[4]\n a, b = split x [2, 2]\n a2 = actnorm a\n b2 = affine b shift=mlp(8)(a2)\n"
                 " a3 = affine a2 shift=mlp(8)(b)\n z = concat a3, b2\n output z\n}\n",
                 "its shift depends on 'b', which the inverse computes only after this operation", 6, 7);
    /* a dropped half loses information */
    expect_error("flow f {\n input x: f32[4]\n a, b = split x [2, 2]\n b2 = affine b shift=a\n output b2\n}\n",
                 "'a' does not reach the output", 3, 2);
    /* a value transformed twice */
    expect_error("flow f {\n input x: f32[4]\n a, b = split x [2, 2]\n z = concat a, a\n output z\n}\n",
                 "'a' is used twice by this 'concat'", 4, 6);
    /* ... or by two operations */
    expect_error("flow f {\n input x: f32[4]\n a, b = split x [2, 2]\n a2 = actnorm a\n a3 = actnorm a\n z = concat a2, b\n output z\n}\n",
                 "'a' is transformed twice", 5, 7);
    /* a conditioner output cannot be part of the flow */
    expect_error("flow f {\n input x: f32[4]\n a, b = split x [2, 2]\n s = mlp(8, out=2)(a)\n z = concat a, s\n output z\n}\n",
                 "'s' is computed by a conditioner", 5, 6);
    /* output not from the input */
    expect_error("flow f {\n input x: f32[2]\n context c: f32[2]\n y = actnorm c\n output y\n}\n",
                 "which is not computed from the input", 4, 6);
    /* widths are inferred through chunk and affine */
    expect_ok("flow f {\n input x: f32[6]\n a, b = split x [2, 4]\n s, t = chunk mlp(8)(a) 2\n"
              " b2 = affine b scale=s shift=t\n z = concat a, b2\n output z\n}\n");
    /* and reported when they cannot be */
    expect_error("flow f {\n input x: f32[4]\n a, b = split x\n h = mlp(8)(a)\n b2 = additive b shift=mlp(4)(h)\n"
                 " z = concat a, b2\n output z\n}\n", "cannot infer the output width of 'mlp(8)'", 4, 6);
    expect_error("flow f {\n input x: f32[4]\n mlp(8)(x)\n}\n", "a net application gives a value", 3, 2);
}

TEST(layer_errors) {
    expect_error("flow f {\n input x: f32[2]\n actnrom\n}\n", "unknown layer 'actnrom'; did you mean 'actnorm'?", 3, 2);
    expect_error("flow f {\n input x: f32[2]\n affine_coupling mask=alternat net=mlp(4)\n}\n",
                 "unknown mask 'alternat'; did you mean 'alternate'?", 3, 23);
    expect_error("flow f {\n input x: f32[1]\n affine_coupling net=mlp(4)\n}\n", "needs at least 2 dimensions", 3, 2);
    expect_error("flow f {\n input x: f32[4]\n affine_coupling mask=[1,1,1,1] net=mlp(4)\n}\n", "nothing to condition on", 3, 23);
    expect_error("flow f {\n input x: f32[4]\n maf net=mlp(4)\n}\n", "needs an autoregressive conditioner", 3, 10);
    expect_error("flow f {\n input x: f32[4]\n affine_coupling net=made(4)\n}\n", "'made' is the autoregressive conditioner", 3, 22);
    expect_error("flow f {\n input x: u8[4]\n}\n", "dtype 'u8' is not supported", 2, 11);
    expect_error("flow f {\n input x: f32[1, 28, 28]\n}\n", "only vectors", 2, 11);
    expect_error("flow f {\n actnorm\n}\n", "has no input", 1, 6);
    expect_error("flow f {\n input x: f32[2]\n repeat 0 { reverse }\n}\n", "repeat count must be between 1", 3, 9);
    expect_error("flow f {\n input x: f32[2]\n leaky_relu slope=0\n}\n", "slope must be in (0, 1]", 3, 19);
    expect_error("net mlp(h) { dense out }\nflow f {\n input x: f32[2]\n}\n", "redefines a built-in net", 1, 5);
    expect_error("net r(h) { dense h relu }\nflow f {\n input x: f32[2]\n affine_coupling net=r(8)\n}\n",
                 "must end with 'dense out'", 1, 12);
    expect_error("net r(h) { residual { dense 3 } \n dense out }\nflow f {\n input x: f32[2]\n affine_coupling net=r(8)\n}\n",
                 "residual block changes the width from 1 to 3", 1, 12);
    expect_error("flow f {\n input x: f32[2]\n y = actnorm x\n reverse\n output y\n}\n", "layer statement in a flow written in graph form", 4, 2);
    /* the loop variable selects masks */
    expect_ok("flow f {\n input x: f32[3]\n repeat 4 as k { affine_coupling mask=alternate(k) net=mlp(8) }\n}\n");
    expect_ok("flow f {\n input x: f32[3]\n repeat 4 { permute seed=i*7+1; additive_coupling mask=[0, 1, 1] net=mlp(8, act=tanh) }\n}\n");
}

TEST(syntax_errors) {
    expect_error("flow f {\n input x: f32[2\n actnorm\n}\n", "expected ',' or ']'", 3, 2);
    expect_error("flow f {\n input x: f32[2]\n", "expected '}' before the end of the file", 3, 1);
    expect_error("flow {\n}\n", "expected the flow's name", 1, 6);
    expect_error("flow f { input x: f32[2]; actnorm ) }\n", "expected the end of the statement", 1, 35);
    expect_error("flow f {\n input x: f32[1.5]\n}\n", "expected a whole number", 2, 15);
    expect_error("x = 3\n", "expected 'flow' or 'net' at the top level", 1, 1);
    expect_error("flow f {\n input x: f32[2]\n actnorm $\n}\n", "unexpected character '$'", 3, 10);
    expect_error("flow f {\n input x: f32[12abc]\n}\n", "invalid number '12abc'", 2, 15);
}

/* like expect_error, and exactly `count` errors: no follow-on errors of the first */
static void expect_errors(const char *text, size_t len, int count, const char *msg, int line, int col) {
    comp c;
    arena_init(&c.ar);
    diag_init(&c.dc, &c.ar);
    memset(&c.res, 0, sizeof c.res);
    c.nerr = front_compile_text(&c.dc, "t.flow", text, len, &c.res, NULL);
    CHECK(c.nerr == count, "%d errors, expected %d (first: %s)\n%s", c.nerr, count, first_error(&c), text);
    const diag *d = NULL;
    for (int i = 0; i < c.dc.nd && !d; i++) if (c.dc.d[i].kind == DIAG_ERROR) d = &c.dc.d[i];
    CHECK(d && strstr(d->msg, msg), "got '%s', expected '%s'", d ? d->msg : "", msg);
    if (d) CHECK(d->loc.line == line && d->loc.col == col, "at %d:%d, expected %d:%d (%s)", d->loc.line, d->loc.col, line, col, d->msg);
    done(&c);
}
#define EXPECT_ERRORS(text, count, msg, line, col) expect_errors(text, sizeof(text) - 1, count, msg, line, col)

/* regressions found while building the tests/bad corpus */
TEST(diagnostic_quality) {
    /* `output c` of the context used to be ignored in favour of the input (identity flow) */
    EXPECT_ERRORS("flow f {\n input x: f32[2]\n context c: f32[2]\n output c\n}\n", 1, "the output 'c' is not computed from the input", 4, 2);
    EXPECT_ERRORS("flow f {\n input x: f32[2]\n output x\n actnorm\n}\n", 1, "layer statement in a flow written in graph form", 4, 2);
    /* lexical: one error per quoted string, UTF-8 decoded with a hint, binary files stop at once */
    EXPECT_ERRORS("flow f {\n input x: f32[2]\n affine_coupling net=\"mlp(4)\"\n}\n", 1, "no strings", 3, 22);
    EXPECT_ERRORS("flow f {\n input x: f32[2]\n leaky_relu slope=\xe2\x88\x92" "0.5\n}\n", 1, "(U+2212); did you mean '-'?", 3, 19);
    EXPECT_ERRORS("flow f {\n input x: f32[2]\n actnorm\n}\n\x1f\x8b\x08\x00\x00{{}}\x00\x01\xff\xfe", 1, "control byte 0x1f", 5, 1);
    EXPECT_ERRORS("# \x01 in a comment is fine\nflow f {\n input x: f32[2]\n act\x00norm\n}\n", 1, "NUL byte", 4, 5);
    EXPECT_ERRORS("flow f {\n input x: f32[2]\n affine_coupling net=\xe2\x80\x9cmlp(4)\xe2\x80\x9d\n}\n", 1, "typographic quote", 3, 22);
    /* bad bytes are skipped: no follow-on syntax error for the tokens around them */
    EXPECT_ERRORS("flow f {\n input x: f32[4]\n affine_coupling mask=@ net=mlp(4)\n}\n", 1, "unexpected character '@'", 3, 23);
    /* syntax */
    EXPECT_ERRORS("flow f {\n input x f32[2]\n}\n", 1, "expected ':' and the type after 'x'", 2, 10);
    EXPECT_ERRORS("flow f {\n input x: f32[4]\n affine_coupling mask= net=mlp(4)\n}\n", 1, "missing value after 'mask='", 3, 22);
    EXPECT_ERRORS("flow f {\n input x: f32[4]\n actnorm\n}\n}\n", 1, "it closes no '{'", 5, 1);
    /* the note of an unclosed '(' points at the '(' */
    {
        comp c;
        compile_text(&c, "flow f {\n input x: f32[4]\n affine_coupling net=mlp(64\n reverse\n}\n");
        CHECK(c.dc.nd == 2 && c.dc.d[1].kind == DIAG_NOTE && c.dc.d[1].loc.line == 3 && c.dc.d[1].loc.col == 25);
        done(&c);
    }
    /* one error for one mistake */
    EXPECT_ERRORS("flow f {\n input x: f32[4]\n affine_coupling nett=mlp(4)\n}\n", 1, "did you mean 'net'?", 3, 18);
    EXPECT_ERRORS("flow f {\n input x: f32[4]\n a, b = split x [2, 2]\n h = mlp(16)(a)\n b2 = additive b shift=mlp(8)(h)\n"
                  " z = concat a, b2\n output z\n}\n", 1, "as in mlp(16, out=N)", 4, 6);
    EXPECT_ERRORS("flow f {\n input x: f32[4]\n actnorm\n a, b = split x\n z = concat a, b\n output z\n}\n", 1,
                  "mixes layer statements and assignments", 4, 2);
    /* messages name what the user wrote, never internal node numbers */
    EXPECT_ERRORS("flow f {\n input x: f32[6]\n a, b = split x [2, 4]\n b2 = additive b shift=mlp(16, out=2)(a)\n z = concat a, b2\n output z\n}\n",
                  1, "the shift 'mlp(16, out=2)(a)' has width 2", 4, 24);
    EXPECT_ERRORS("flow f {\n input x: f32[4]\n a, b = split x [2, 2]\n b2 = additive b shift=mlp(32)(b)\n z = concat a, b2\n output z\n}\n",
                  1, "'additive' cannot be inverted", 4, 7);
    EXPECT_ERRORS("flow f {\n input x: f32[4]\n y = actnorm(x)\n output y\n}\n", 1, "without parentheses: y = actnorm x", 3, 6);
    EXPECT_ERRORS("flow f {\n input x: f32[5]\n a, b = split x\n z = concat a, b\n output z\n}\n", 1, "as in 'split x [2, 3]'", 3, 15);
}

/* diagnostics render clang-style: file:line:col, the line, a caret under the range */
TEST(diagnostic_rendering) {
    comp c;
    compile_text(&c, "flow f {\n  input x: f32[2]\n  affine_coupling mask=alternat net=mlp(4)\n}\n");
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    diag_render(&c.dc, m, 0);
    fclose(m);
    CHECK_STR(buf, "t.flow:3:24: error: unknown mask 'alternat'; did you mean 'alternate'?\n"
                   "    3 |   affine_coupling mask=alternat net=mlp(4)\n"
                   "      |                        ^~~~~~~~\n");
    free(buf);
    done(&c);
}

/* many errors in one run, capped */
TEST(error_cap) {
    char text[8192] = "flow f {\n input x: f32[2]\n";
    for (int i = 0; i < 40; i++) strcat(text, " bogus\n");
    strcat(text, "}\n");
    comp c;
    compile_text(&c, text);
    int shown = 0;
    for (int i = 0; i < c.dc.nd; i++) shown += c.dc.d[i].kind == DIAG_ERROR;
    CHECK(shown == DIAG_MAX_ERRORS, "%d errors shown", shown);
    CHECK(c.dc.capped);
    done(&c);
}

/* a chain of 150000 conditioner nets: the invertibility analysis used to recurse once per
 * net and overflow the stack; name lookups and split bookkeeping used to be quadratic */
TEST(long_graphs) {
    int n = 150000;
    size_t cap = (size_t)n * 48 + 4096, len = 0;
    char *text = malloc(cap);
    len += (size_t)snprintf(text + len, cap - len, "flow f {\n input x: f32[4]\n a, b = split x [2, 2]\n h0 = mlp(2, out=2)(a)\n");
    for (int i = 1; i < n; i++) len += (size_t)snprintf(text + len, cap - len, " h%d = mlp(2, out=2)(h%d)\n", i, i - 1);
    len += (size_t)snprintf(text + len, cap - len, " b2 = additive b shift=h%d\n z = concat a, b2\n output z\n}\n", n - 1);
    comp c;
    arena_init(&c.ar);
    diag_init(&c.dc, &c.ar);
    memset(&c.res, 0, sizeof c.res);
    c.nerr = front_compile_text(&c.dc, "t.flow", text, len, &c.res, NULL);
    CHECK(c.nerr == 0, "%s", first_error(&c));
    done(&c);
    free(text);
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(1 << 16);
    *len = fread(buf, 1, 1 << 16, f);
    fclose(f);
    return buf;
}

/* Compile bytes; return 0 if a rejection lacked a located error. */
static int robust(const char *text, size_t len) {
    arena ar;
    arena_init(&ar);
    diag_ctx dc;
    diag_init(&dc, &ar);
    sema_result res = { 0 };
    int n = front_compile_text(&dc, "m.flow", text, len, &res, NULL);
    int ok = 1;
    if (n > 0) {
        ok = 0;
        for (int i = 0; i < dc.nd; i++)
            if (dc.d[i].kind == DIAG_ERROR && dc.d[i].loc.file == 0 && dc.d[i].loc.line >= 1) ok = 1;
        /* rendering must work on any location */
        FILE *devnull = fopen("/dev/null", "w");
        diag_render(&dc, devnull, 1);
        fclose(devnull);
    } else {
        ok = res.nflows > 0;
        FILE *devnull = fopen("/dev/null", "w");
        for (int i = 0; i < res.nflows; i++) ir_dump(res.flows[i], devnull);
        fclose(devnull);
    }
    arena_free(&ar);
    return ok;
}

TEST(truncations_and_mutations_never_crash) {
    static const char *ex[] = { "examples/moons.flow", "examples/maf.flow", "examples/glow_dense.flow",
                                "examples/cmoons.flow", "examples/custom.flow" };
    uint64_t st = 12345;
    for (int e = 0; e < 5; e++) {
        size_t len;
        char *text = slurp(ex[e], &len);
        CHECK(text != NULL, "%s", ex[e]);
        if (!text) continue;
        for (size_t k = 0; k <= len; k++) CHECK(robust(text, k), "%s truncated to %zu bytes", ex[e], k);
        char *mut = malloc(len + 64);
        for (int m = 0; m < 400; m++) {
            memcpy(mut, text, len);
            size_t n = len;
            int nedits = 1 + m % 4;
            for (int r = 0; r < nedits; r++) {
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                uint64_t x = st >> 33;
                size_t at = n ? (size_t)(x % n) : 0;
                switch ((x >> 20) % 4) {
                case 0: mut[at] = (char)(x >> 8); break;                         /* replace */
                case 1: if (n) { memmove(mut + at, mut + at + 1, n - at - 1); n--; } break; /* delete */
                case 2: if (n < len + 60) { memmove(mut + at + 1, mut + at, n - at); mut[at] = "{}()[],=:;#\n 0a-"[x % 16]; n++; } break;
                default: if (n) mut[at] = "{}()[],=:;#\n 0a-"[(x >> 4) % 16]; break;
                }
            }
            CHECK(robust(mut, n), "%s mutation %d", ex[e], m);
        }
        free(mut);
        free(text);
    }
}

int main(void) {
    RUN(examples_parameter_counts);
    RUN(invertibility_analysis);
    RUN(layer_errors);
    RUN(syntax_errors);
    RUN(diagnostic_quality);
    RUN(diagnostic_rendering);
    RUN(error_cap);
    RUN(long_graphs);
    RUN(truncations_and_mutations_never_crash);
    return t_done();
}

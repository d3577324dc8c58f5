/* fuzz/fuzz_parse.c: arbitrary bytes as a .flow file through the lexer, the parser and
 * semantic analysis (front_compile_text, which takes the bytes with their length, so NUL
 * bytes reach the lexer), then derive and the gradient builder for every accepted flow.
 *
 * Aborts (a finding) when:
 *   - a rejected file has no error with a location (line >= 1) in the file;
 *   - any diagnostic points outside the text (line past the last line, column past the end
 *     of its line + 1) or has no message;
 *   - an accepted flow cannot be derived ("internal error") or differentiated (flows of up to
 *     200000 parameters: larger ones are slow to derive, not wrong);
 *   - a crash, leak, hang or sanitizer report (libFuzzer and ASan/UBSan see those).
 * The diagnostics are also rendered (to /dev/null) so the caret code runs. See docs/fuzzing.md. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "derive.h"
#include "front.h"
#include "grad.h"

static FILE *devnull;

/* the number of lines of text, and the length of line `line` (1-based) */
static int count_lines(const char *t, size_t n) {
    int lines = 1;
    for (size_t i = 0; i < n; i++) if (t[i] == '\n') lines++;
    return lines;
}
static size_t line_len(const char *t, size_t n, int line) {
    size_t i = 0;
    for (int l = 1; l < line && i < n; i++) if (t[i] == '\n') l++;
    size_t s = i;
    while (i < n && t[i] != '\n') i++;
    return i - s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!devnull) devnull = fopen("/dev/null", "w");
    const char *text = (const char *)data;
    arena ar;
    arena_init(&ar);
    diag_ctx dc;
    diag_init(&dc, &ar);
    sema_result res = { 0 };
    int nerr = front_compile_text(&dc, "fuzz.flow", text, size, &res, NULL);
    int nlines = count_lines(text, size);
    int located = 0;
    for (int i = 0; i < dc.nd; i++) {
        const diag *d = &dc.d[i];
        if (!d->msg || !d->msg[0]) { fprintf(stderr, "fuzz_parse: diagnostic %d has no message\n", i); abort(); }
        if (d->loc.line >= 1) {
            if (d->loc.file < 0 || d->loc.file >= dc.nfiles || d->loc.line > nlines || d->loc.col < 1 ||
                (size_t)d->loc.col > line_len(text, size, d->loc.line) + 1) {
                fprintf(stderr, "fuzz_parse: diagnostic '%s' at %d:%d is outside the text (%d lines)\n", d->msg,
                        d->loc.line, d->loc.col, nlines);
                abort();
            }
            if (d->kind == DIAG_ERROR) located = 1;
        }
    }
    if (nerr > 0 && !located) {
        fprintf(stderr, "fuzz_parse: %d error(s) but none located in the file:\n", nerr);
        diag_render(&dc, stderr, 0);
        abort();
    }
    if (nerr == 0 && res.nflows == 0) { fprintf(stderr, "fuzz_parse: accepted a file without flows\n"); abort(); }
    if (devnull) diag_render(&dc, devnull, 0);
    for (int i = 0; nerr == 0 && i < res.nflows; i++) {
        /* derive's work grows with the parameters (MADE masks are constant tensors of the
         * weights' size): a flow of 10^6 parameters takes seconds under ASan, a slow unit
         * but no bug; such flows are only checked by sema */
        int64_t params = 0;
        for (int q = 0; q < res.flows[i]->np; q++) params += ir_param_numel(&res.flows[i]->params[q]);
        if (params > 200000) continue;
        derived dv;
        char err[1024];
        if (derive_all(res.flows[i], &ar, &dv, err, sizeof err)) {
            fprintf(stderr, "fuzz_parse: sema accepted flow '%s' but derive failed: %s\n", res.flows[i]->name, err);
            abort();
        }
        tprog *gp = NULL;
        if (grad_build(res.flows[i], &ar, &gp, err, sizeof err)) {
            fprintf(stderr, "fuzz_parse: sema accepted flow '%s' but the gradient failed: %s\n", res.flows[i]->name, err);
            abort();
        }
    }
    arena_free(&ar);
    return 0;
}

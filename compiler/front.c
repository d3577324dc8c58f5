/* compiler/front.c: read a file and run lexer, parser and semantic analysis (see front.h). */
#include "front.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int front_compile_text(diag_ctx *dc, const char *name, const char *text, size_t len, sema_result *out, ast **tree) {
    int e0 = dc->nerrors;
    int f = diag_add_file(dc, name, text, len);
    ast *t = parse_file(dc, f);
    if (tree) *tree = t;
    if (dc->nerrors == e0) sema_file(dc, t, out);
    return dc->nerrors - e0;
}

int front_compile_file(diag_ctx *dc, const char *path, sema_result *out, ast **tree) {
    if (tree) *tree = NULL;
    FILE *fp = fopen(path, "rb");
    int f = -1;
    if (!fp) {
        f = diag_add_file(dc, path, "", 0);
        loc_t l = { f, 0, 0, 0 };
        diag_error(dc, l, "cannot open: %s", strerror(errno));
        return 1;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            size_t nc = cap ? cap * 2 : 65536;
            if (nc > NFC_MAX_SOURCE_BYTES + 1) nc = NFC_MAX_SOURCE_BYTES + 1;
            buf = arena_grow(dc->ar, buf, cap, nc);
            cap = nc;
        }
        size_t n = fread(buf + len, 1, cap - len, fp);
        len += n;
        if (n == 0 || len > NFC_MAX_SOURCE_BYTES) break;
    }
    int rerr = ferror(fp);
    fclose(fp);
    if (rerr || len > NFC_MAX_SOURCE_BYTES) {
        f = diag_add_file(dc, path, "", 0);
        loc_t l = { f, 0, 0, 0 };
        if (rerr) diag_error(dc, l, "cannot read the file (is it a directory?)");
        else diag_error(dc, l, "file is too large (the limit is %u MiB)", NFC_MAX_SOURCE_BYTES >> 20);
        return 1;
    }
    return front_compile_text(dc, path, buf, len, out, tree);
}

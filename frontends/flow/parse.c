/* frontends/flow/parse.c: tokens to the syntax tree (ast.h).
 * Input: a source file in a diag_ctx. Output: an AST_FILE of flows and nets, each node
 * located. Recursive descent with two tokens of lookahead. On a syntax error it reports once,
 * skips to the end of the statement and goes on, so one run shows several errors. Nesting
 * is limited (64 levels) so that no input can exhaust the stack. A file with a NUL or control
 * byte outside comments is not text: one error, and nothing is parsed.
 *
 *   file    := { flow | net | NEWLINE | ';' }
 *   flow    := 'flow' NAME '{' block '}'
 *   net     := 'net' NAME '(' [NAME {',' NAME}] ')' '{' block '}'
 *   block   := { stmt (NEWLINE | ';') }
 *   stmt    := ('input' | 'context') NAME ':' NAME '[' expr {',' expr} ']' {opt}
 *            | [NAME {',' NAME} '='] NAME {arg [',']} {opt} ['{' block '}']
 *   opt     := NAME '=' expr
 *   arg     := expr
 *   expr    := term {('+' | '-') term};   term := unary {('*' | '/' | '%') unary}
 *   unary   := '-' unary | primary
 *   primary := INT | FLOAT | NAME | NAME '(' args ')' {'(' args ')'} | '[' [args] ']' | '(' expr ')'
 *   args    := (expr | opt) {',' (expr | opt)}
 */
#include "ast.h"

#include <string.h>

#define MAX_DEPTH 64

typedef struct {
    diag_ctx *dc;
    arena    *ar;
    lexer     lx;
    token     tk[2];     /* current and next token */
    int       depth;
    int       bail;      /* an error was reported in this statement: skip to its end */
    loc_t     lex_err;   /* the last error the lexer reported */
} parser;

static token lex(parser *p) {
    int e0 = p->dc->nerrors;
    token t = lex_next(&p->lx);
    if (p->dc->nerrors > e0 && !p->dc->capped && p->dc->nd > 0) p->lex_err = p->dc->d[p->dc->nd - 1].loc;
    return t;
}

static void advance(parser *p) {
    p->tk[0] = p->tk[1];
    p->tk[1] = lex(p);
}

static token *cur(parser *p) { return &p->tk[0]; }
static int at(parser *p, tok_kind k) { return p->tk[0].kind == k; }

static ast *new_node(parser *p, ast_kind kind, loc_t loc) {
    ast *n = arena_alloc(p->ar, sizeof *n);
    n->kind = kind;
    n->loc = loc;
    n->name_loc = loc;
    return n;
}

static char *tok_text(parser *p, const token *t) {
    return arena_strndup(p->ar, t->start, (size_t)t->loc.len);
}

static void describe(parser *p, const token *t, char *buf, size_t n) {
    if (t->kind == TK_IDENT || t->kind == TK_INT || t->kind == TK_FLOAT) {
        int len = t->loc.len > 32 ? 32 : t->loc.len;
        snprintf(buf, n, "'%.*s'", len, t->start);
    } else {
        snprintf(buf, n, "%s", tok_name(t->kind));
    }
    (void)p;
}

/* The lexer reported bad bytes on this line before the current token (they were skipped, so
 * the tokens around them may not fit): a syntax error here would only repeat that one. */
static int after_lex_error(parser *p) {
    return p->lex_err.line == cur(p)->loc.line && p->lex_err.file == cur(p)->loc.file && p->lex_err.col <= cur(p)->loc.col;
}

static void error_at_cur(parser *p, const char *what) {
    if (p->bail) return;
    if (after_lex_error(p)) { p->bail = 1; return; }
    char got[64];
    describe(p, cur(p), got, sizeof got);
    diag_error(p->dc, cur(p)->loc, "expected %s, found %s", what, got);
    p->bail = 1;
}

static int expect(parser *p, tok_kind k, const char *what) {
    if (at(p, k)) { advance(p); return 1; }
    error_at_cur(p, what);
    return 0;
}

static int end_of_stmt(parser *p) {
    tok_kind k = cur(p)->kind;
    return k == TK_NEWLINE || k == TK_SEMI || k == TK_RBRACE || k == TK_EOF;
}

/* Skip to the end of the current statement, keeping ( ) [ ] { } balanced. */
static void sync_stmt(parser *p) {
    int braces = 0;
    while (!at(p, TK_EOF)) {
        tok_kind k = cur(p)->kind;
        if (braces == 0 && (k == TK_NEWLINE || k == TK_SEMI || k == TK_RBRACE)) break;
        if (k == TK_LBRACE) braces++;
        if (k == TK_RBRACE) braces--;
        advance(p);
    }
    p->bail = 0;
}

static ast *parse_expr(parser *p);

static int enter(parser *p) {
    if (p->depth >= MAX_DEPTH) {
        if (!p->bail) diag_error(p->dc, cur(p)->loc, "nesting is too deep (the limit is %d levels)", MAX_DEPTH);
        p->bail = 1;
        return 0;
    }
    p->depth++;
    return 1;
}
static void leave(parser *p) { p->depth--; }

static int is_opt_start(parser *p) { return at(p, TK_IDENT) && p->tk[1].kind == TK_EQ; }

static void parse_opt(parser *p, ast_opt **opts, int *n, int *cap) {
    ast_opt o;
    o.key = tok_text(p, cur(p));
    o.loc = cur(p)->loc;
    advance(p); /* name */
    loc_t eq = cur(p)->loc;
    advance(p); /* = */
    if (!p->bail && (end_of_stmt(p) || is_opt_start(p) || at(p, TK_LBRACE) || at(p, TK_COMMA) || at(p, TK_RPAREN))) {
        /* `mask= net=...`: the value is missing, not the next option misplaced */
        if (!after_lex_error(p)) diag_error(p->dc, eq, "missing value after '%s='", o.key);
        p->bail = 1;
        return;
    }
    o.val = parse_expr(p);
    if (!o.val) return;
    VEC_PUSH(p->ar, *opts, *n, *cap, o);
}

/* args after '(' or '[' (at `open`) up to the closing token (consumed). Options allowed when
 * allow_opts. Returns the location of the closing token, or of `open` after an error. */
static loc_t parse_args(parser *p, ast *n, loc_t open, tok_kind close, const char *close_name, int allow_opts) {
    loc_t end = cur(p)->loc;
    if (at(p, close)) { advance(p); return end; }
    for (;;) {
        if (allow_opts && is_opt_start(p)) {
            parse_opt(p, &n->opts, &n->nopts, &n->cap_opts);
        } else {
            ast *e = parse_expr(p);
            if (!e) return open;
            VEC_PUSH(p->ar, n->args, n->nargs, n->cap_args, e);
        }
        if (p->bail) return open;
        if (at(p, TK_COMMA)) { advance(p); continue; }
        end = cur(p)->loc;
        if (at(p, close)) { advance(p); return end; }
        char what[64];
        snprintf(what, sizeof what, "',' or %s", close_name);
        int reported = p->bail;
        error_at_cur(p, what);
        if (!reported && cur(p)->loc.line > open.line)
            diag_note(p->dc, open, "to match this %s", close == TK_RPAREN ? "'('" : "'['");
        return open;
    }
}

static ast *parse_primary(parser *p) {
    token t = *cur(p);
    switch (t.kind) {
    case TK_INT: {
        ast *n = new_node(p, AST_INT, t.loc);
        n->ival = t.ival;
        n->fval = t.fval;
        advance(p);
        return n;
    }
    case TK_FLOAT: {
        ast *n = new_node(p, AST_FLOAT, t.loc);
        n->fval = t.fval;
        advance(p);
        return n;
    }
    case TK_IDENT: {
        ast *n = new_node(p, AST_NAME, t.loc);
        n->name = tok_text(p, &t);
        advance(p);
        if (!at(p, TK_LPAREN)) return n;
        /* a call: name(args), then any number of applications (values) */
        n->kind = AST_CALL;
        loc_t open = cur(p)->loc;
        advance(p);
        if (!enter(p)) return NULL;
        parse_args(p, n, open, TK_RPAREN, "')'", 1);
        leave(p);
        while (!p->bail && at(p, TK_LPAREN)) {
            ast *a = new_node(p, AST_APPLY, cur(p)->loc);
            a->callee = n;
            a->name = n->name;
            loc_t aopen = cur(p)->loc;
            advance(p);
            if (!enter(p)) return NULL;
            loc_t close = parse_args(p, a, aopen, TK_RPAREN, "')'", 0);
            leave(p);
            a->loc = loc_span(n->loc, close);   /* the whole `mlp(32)(a)` */
            n = a;
        }
        return p->bail ? NULL : n;
    }
    case TK_LBRACK: {
        ast *n = new_node(p, AST_LIST, t.loc);
        advance(p);
        if (!enter(p)) return NULL;
        n->loc = loc_span(n->loc, parse_args(p, n, t.loc, TK_RBRACK, "']'", 0));  /* the whole `[0, 1]` */
        leave(p);
        return p->bail ? NULL : n;
    }
    case TK_LPAREN: {
        advance(p);
        if (!enter(p)) return NULL;
        ast *e = parse_expr(p);
        leave(p);
        if (!e || !expect(p, TK_RPAREN, "')'")) return NULL;
        return e;
    }
    case TK_MINUS: {
        advance(p);
        if (!enter(p)) return NULL;
        ast *e = parse_primary(p);
        leave(p);
        if (!e) return NULL;
        if (e->kind == AST_INT) { e->ival = -e->ival; e->fval = -e->fval; e->loc = loc_span(t.loc, e->loc); return e; }
        if (e->kind == AST_FLOAT) { e->fval = -e->fval; e->loc = loc_span(t.loc, e->loc); return e; }
        ast *n = new_node(p, AST_NEG, t.loc);
        VEC_PUSH(p->ar, n->args, n->nargs, n->cap_args, e);
        return n;
    }
    default:
        error_at_cur(p, "a value");
        return NULL;
    }
}

static ast *binop(parser *p, char op, ast *l, ast *r, loc_t loc) {
    ast *n = new_node(p, AST_BINOP, loc);
    n->op = op;
    VEC_PUSH(p->ar, n->args, n->nargs, n->cap_args, l);
    VEC_PUSH(p->ar, n->args, n->nargs, n->cap_args, r);
    return n;
}

static ast *parse_term(parser *p) {
    ast *l = parse_primary(p);
    while (l && (at(p, TK_STAR) || at(p, TK_SLASH) || at(p, TK_PERCENT))) {
        token op = *cur(p);
        advance(p);
        ast *r = parse_primary(p);
        if (!r) return NULL;
        l = binop(p, op.kind == TK_STAR ? '*' : op.kind == TK_SLASH ? '/' : '%', l, r, op.loc);
    }
    return l;
}

static ast *parse_expr(parser *p) {
    if (!enter(p)) return NULL;
    ast *l = parse_term(p);
    while (l && (at(p, TK_PLUS) || at(p, TK_MINUS))) {
        token op = *cur(p);
        advance(p);
        ast *r = parse_term(p);
        if (!r) { leave(p); return NULL; }
        l = binop(p, op.kind == TK_PLUS ? '+' : '-', l, r, op.loc);
    }
    leave(p);
    return l;
}

static void parse_block(parser *p, ast *owner, loc_t open);

/* input x: f32[2] {opt} */
static ast *parse_decl(parser *p) {
    ast *n = new_node(p, AST_DECL, cur(p)->loc);
    n->name = tok_text(p, cur(p)); /* word; the declared name goes to dtype/targets below */
    advance(p);
    ast *nm = new_node(p, AST_NAME, cur(p)->loc);
    nm->name = tok_text(p, cur(p));
    VEC_PUSH(p->ar, n->targets, n->ntargets, n->cap_targets, nm);
    advance(p); /* name */
    if (!at(p, TK_COLON)) {
        char what[200];
        snprintf(what, sizeof what, "':' and the type after '%.64s', as in '%s %.64s: f32[2]'", nm->name, n->name, nm->name);
        error_at_cur(p, what);
        return n;
    }
    advance(p); /* : */
    if (!at(p, TK_IDENT)) { error_at_cur(p, "a type such as 'f32[2]'"); return n; }
    n->dtype = tok_text(p, cur(p));
    n->dtype_loc = cur(p)->loc;
    advance(p);
    if (!at(p, TK_LBRACK)) { error_at_cur(p, "'[' and the shape, as in 'f32[2]'"); return n; }
    n->shape = new_node(p, AST_LIST, cur(p)->loc);
    loc_t open = cur(p)->loc;
    advance(p);
    if (!enter(p)) return n;
    parse_args(p, n->shape, open, TK_RBRACK, "']'", 0);
    leave(p);
    n->shape->loc = n->dtype_loc;
    while (!p->bail && !end_of_stmt(p)) {
        if (!is_opt_start(p)) { error_at_cur(p, "an option (key=value) or the end of the line"); break; }
        parse_opt(p, &n->opts, &n->nopts, &n->cap_opts);
    }
    return n;
}

static ast *parse_stmt(parser *p) {
    token t = *cur(p);
    if (t.kind != TK_IDENT) {
        if (t.kind == TK_LBRACE)
            diag_error(p->dc, t.loc, "unexpected '{': a block must follow a statement such as 'repeat 4'");
        else
            error_at_cur(p, "a statement");
        p->bail = 1;
        return NULL;
    }
    char *word = tok_text(p, &t);
    if ((!strcmp(word, "input") || !strcmp(word, "context")) && p->tk[1].kind == TK_IDENT) {
        /* lookahead: "input x :" */
        return parse_decl(p);
    }
    ast *n = new_node(p, AST_CMD, t.loc);
    /* targets: NAME {, NAME} = */
    if (p->tk[1].kind == TK_EQ || p->tk[1].kind == TK_COMMA) {
        for (;;) {
            if (!at(p, TK_IDENT)) { error_at_cur(p, "a name to assign"); return NULL; }
            ast *nm = new_node(p, AST_NAME, cur(p)->loc);
            nm->name = tok_text(p, cur(p));
            VEC_PUSH(p->ar, n->targets, n->ntargets, n->cap_targets, nm);
            advance(p);
            if (at(p, TK_COMMA)) { advance(p); continue; }
            if (!expect(p, TK_EQ, "',' or '='")) return NULL;
            break;
        }
        if (!at(p, TK_IDENT)) { error_at_cur(p, "an operation after '='"); return NULL; }
        n->loc = cur(p)->loc;
    }
    n->name = tok_text(p, cur(p));
    n->name_loc = cur(p)->loc;
    if (p->tk[1].kind == TK_LPAREN && p->tk[1].start == cur(p)->start + cur(p)->loc.len) {
        /* a word directly followed by '(' is a call, e.g. `h = mlp(32)(a)` */
        n->callee = parse_expr(p);
        if (!n->callee) return NULL;
    } else {
        advance(p);
    }
    while (!p->bail && !end_of_stmt(p) && !at(p, TK_LBRACE)) {
        tok_kind k = cur(p)->kind;
        if (k != TK_INT && k != TK_FLOAT && k != TK_IDENT && k != TK_LBRACK && k != TK_LPAREN && k != TK_MINUS) {
            error_at_cur(p, "the end of the statement");
            return NULL;
        }
        if (is_opt_start(p)) {
            parse_opt(p, &n->opts, &n->nopts, &n->cap_opts);
        } else {
            if (n->nopts > 0) {
                diag_error(p->dc, cur(p)->loc, "positional arguments must come before options (key=value)");
                p->bail = 1;
                return NULL;
            }
            ast *e = parse_expr(p);
            if (!e) return NULL;
            VEC_PUSH(p->ar, n->args, n->nargs, n->cap_args, e);
        }
        if (at(p, TK_COMMA)) advance(p);
    }
    if (!p->bail && at(p, TK_LBRACE)) {
        loc_t open = cur(p)->loc;
        advance(p);
        n->has_block = 1;
        if (!enter(p)) return NULL;
        parse_block(p, n, open);
        leave(p);
    }
    return p->bail ? NULL : n;
}

/* statements up to the matching '}' (consumed) */
static void parse_block(parser *p, ast *owner, loc_t open) {
    for (;;) {
        while (at(p, TK_NEWLINE) || at(p, TK_SEMI)) advance(p);
        if (at(p, TK_RBRACE)) { advance(p); return; }
        if (at(p, TK_EOF)) {
            if (!p->bail) {
                diag_error(p->dc, cur(p)->loc, "expected '}' before the end of the file");
                diag_note(p->dc, open, "to match this '{'");
            }
            p->bail = 1;
            return;
        }
        ast *s = parse_stmt(p);
        if (s) VEC_PUSH(p->ar, owner->body, owner->nbody, owner->cap_body, s);
        if (p->bail) {
            if (at(p, TK_EOF)) return;
            sync_stmt(p);  /* stops before this block's '}' */
            continue;
        }
        if (!end_of_stmt(p)) {
            error_at_cur(p, "the end of the statement");
            sync_stmt(p);
        }
    }
}

static ast *parse_def(parser *p) {
    token kw = *cur(p);
    int is_net = kw.loc.len == 3 && !strncmp(kw.start, "net", 3);
    advance(p);
    if (!at(p, TK_IDENT)) { error_at_cur(p, is_net ? "the net's name" : "the flow's name"); return NULL; }
    ast *n = new_node(p, is_net ? AST_NETDEF : AST_FLOW, kw.loc);
    n->name = tok_text(p, cur(p));
    n->name_loc = cur(p)->loc;
    advance(p);
    if (is_net) {
        if (!expect(p, TK_LPAREN, "'(' and the net's parameters")) return NULL;
        if (!at(p, TK_RPAREN)) {
            for (;;) {
                if (!at(p, TK_IDENT)) { error_at_cur(p, "a parameter name"); return NULL; }
                ast *nm = new_node(p, AST_NAME, cur(p)->loc);
                nm->name = tok_text(p, cur(p));
                VEC_PUSH(p->ar, n->params, n->nparams, n->cap_params, nm);
                advance(p);
                if (at(p, TK_COMMA)) { advance(p); continue; }
                break;
            }
        }
        if (!expect(p, TK_RPAREN, "')'")) return NULL;
    }
    while (at(p, TK_NEWLINE)) advance(p);
    loc_t open = cur(p)->loc;
    if (!expect(p, TK_LBRACE, "'{'")) return NULL;
    p->depth = 1;
    parse_block(p, n, open);
    p->depth = 0;
    return n;
}

/* A NUL or control byte outside comments means the file is not text (a binary, a compressed
 * file): report the first one and parse nothing, rather than one error per run of junk. */
static int reject_binary(diag_ctx *dc, int file) {
    const source_file *f = &dc->files[file];
    const unsigned char *t = (const unsigned char *)f->text, *e = t + f->len, *ls = t;
    int line = 1;
    for (const unsigned char *q = t; q < e; q++) {
        unsigned char c = *q;
        if (c == '#') {
            while (q + 1 < e && q[1] != '\n') q++;
        } else if (c == '\n') {
            line++;
            ls = q + 1;
        } else if ((c < 32 && c != '\t' && c != '\r' && c != '\f' && c != '\v') || c == 127) {
            loc_t l = { file, line, (int)(q - ls) + 1, 1 };
            if (c == 0) diag_error(dc, l, "unexpected NUL byte; is this a text file?");
            else diag_error(dc, l, "unexpected control byte 0x%02x; is this a text file?", c);
            return 1;
        }
    }
    return 0;
}

ast *parse_file(diag_ctx *dc, int file) {
    if (reject_binary(dc, file)) {
        loc_t start = { file, 1, 1, 1 };
        ast *root = arena_alloc(dc->ar, sizeof *root);
        root->kind = AST_FILE;
        root->loc = root->name_loc = start;
        return root;
    }
    parser p;
    memset(&p, 0, sizeof p);
    p.dc = dc;
    p.ar = dc->ar;
    lex_init(&p.lx, dc, file);
    p.tk[0] = lex(&p);
    p.tk[1] = lex(&p);
    loc_t start = { file, 1, 1, 1 };
    ast *root = new_node(&p, AST_FILE, start);
    while (!at(&p, TK_EOF)) {
        if (dc->capped) break;
        if (at(&p, TK_NEWLINE) || at(&p, TK_SEMI)) { advance(&p); continue; }
        token t = *cur(&p);
        int is_def = t.kind == TK_IDENT &&
                     ((t.loc.len == 4 && !strncmp(t.start, "flow", 4)) || (t.loc.len == 3 && !strncmp(t.start, "net", 3)));
        if (!is_def) {
            if (!p.bail) {
                char got[64];
                describe(&p, &t, got, sizeof got);
                if (t.kind == TK_RBRACE)
                    diag_error(dc, t.loc, "unexpected '}' at the top level: it closes no '{'");
                else
                    diag_error(dc, t.loc, "expected 'flow' or 'net' at the top level, found %s", got);
            }
            /* skip to the next line that could start a definition */
            p.bail = 1;
            while (!at(&p, TK_EOF) && !at(&p, TK_NEWLINE)) {
                if (at(&p, TK_LBRACE)) {   /* skip a whole braced group */
                    int d = 0;
                    do {
                        if (at(&p, TK_LBRACE)) d++;
                        if (at(&p, TK_RBRACE)) d--;
                        advance(&p);
                    } while (d > 0 && !at(&p, TK_EOF));
                    continue;
                }
                advance(&p);
            }
            p.bail = 0;
            continue;
        }
        ast *d = parse_def(&p);
        if (d) VEC_PUSH(p.ar, root->body, root->nbody, root->cap_body, d);
        if (p.bail) {
            /* resynchronize at the top level: skip to a line starting with flow/net */
            while (!at(&p, TK_EOF)) {
                if (at(&p, TK_NEWLINE)) {
                    advance(&p);
                    token u = *cur(&p);
                    if (u.kind == TK_IDENT && u.loc.col == 1 &&
                        ((u.loc.len == 4 && !strncmp(u.start, "flow", 4)) || (u.loc.len == 3 && !strncmp(u.start, "net", 3))))
                        break;
                    continue;
                }
                advance(&p);
            }
            p.bail = 0;
            p.depth = 0;
        }
    }
    return root;
}

/* frontends/flow/ast.h: the syntax tree of a .flow file, and the lexer/parser entry points.
 *
 * The language is deliberately regular: after the two definition forms (`flow NAME { }` and
 * `net NAME(params) { }`) and declarations (`input x: f32[2]`), every statement is a command:
 *
 *     [target {, target} =] word {arg} {key=value} [{ block }]
 *
 * so layers (`affine_coupling mask=alternate net=mlp(64, 64)`), graph operations
 * (`b2 = affine b scale=s shift=t`), `repeat 8 { ... }`, `base normal` and net-body lines
 * (`dense h relu`) all share one node kind. Semantic analysis gives words their meaning.
 * Every node keeps its location (file, line, column, length).
 */
#ifndef NFC_AST_H
#define NFC_AST_H
#include "../../compiler/base.h"

typedef enum {
    AST_FILE,     /* body: flows and nets */
    AST_FLOW,     /* name, body */
    AST_NETDEF,   /* name, params, body */
    AST_DECL,     /* word ("input"/"context"), name, dtype, shape (AST_LIST), opts */
    AST_CMD,      /* targets =, word, args, opts, body (block, may be empty; has_block) */
    /* expressions */
    AST_NAME,     /* name */
    AST_INT,      /* ival */
    AST_FLOAT,    /* fval */
    AST_LIST,     /* args: [a, b, ...] */
    AST_CALL,     /* name(args, opts)        e.g. mlp(64, 64), normal(learned) */
    AST_APPLY,    /* callee(args)            e.g. mlp(32)(a): callee is an AST_CALL */
    AST_BINOP,    /* op in "+-*%/", args[0], args[1] */
    AST_NEG,      /* -args[0] */
} ast_kind;

typedef struct ast ast;

typedef struct {
    const char *key;
    loc_t       loc;   /* of the key */
    ast        *val;
} ast_opt;

struct ast {
    ast_kind    kind;
    loc_t       loc;         /* the whole node (for commands: the word) */
    const char *name;        /* identifier, command word, flow/net name */
    loc_t       name_loc;
    int64_t     ival;
    double      fval;
    char        op;          /* AST_BINOP */
    int         has_block;   /* AST_CMD: a { } block followed */
    ast       **args;   int nargs, cap_args;     /* positional args, list items, call args */
    ast_opt    *opts;   int nopts, cap_opts;     /* key=value options */
    ast       **body;   int nbody, cap_body;     /* statements of a flow, net or block */
    ast       **targets; int ntargets, cap_targets; /* AST_NAME nodes left of '=' */
    ast        *callee;      /* AST_APPLY */
    const char *dtype;       /* AST_DECL */
    loc_t       dtype_loc;
    ast        *shape;       /* AST_DECL: an AST_LIST of dimensions */
    ast       **params; int nparams, cap_params; /* AST_NETDEF: AST_NAME nodes */
};

/* ---- lexer ---- */
typedef enum {
    TK_EOF, TK_NEWLINE, TK_IDENT, TK_INT, TK_FLOAT,
    TK_LBRACE, TK_RBRACE, TK_LPAREN, TK_RPAREN, TK_LBRACK, TK_RBRACK,
    TK_COMMA, TK_COLON, TK_SEMI, TK_EQ, TK_PLUS, TK_MINUS, TK_STAR, TK_SLASH, TK_PERCENT,
} tok_kind;

typedef struct {
    tok_kind    kind;
    loc_t       loc;
    const char *start;   /* points into the source text */
    int64_t     ival;
    double      fval;
} token;

typedef struct {
    diag_ctx   *dc;
    int         file;
    const char *p, *end, *line_start;
    int         line;
    int         depth;   /* ( and [ nesting: newlines inside are not statement ends */
} lexer;

void        lex_init(lexer *lx, diag_ctx *dc, int file);
token       lex_next(lexer *lx);
const char *tok_name(tok_kind k);

/* ---- parser ---- */
/* Parse one source file (already added to dc). Returns an AST_FILE; errors go to dc. Never
 * fails on any bytes: bad input yields diagnostics and a partial tree. */
ast *parse_file(diag_ctx *dc, int file);

#endif

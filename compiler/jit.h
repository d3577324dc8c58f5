/* compiler/jit.h: the in-process JIT (ORC LLJIT) for modules built by cg.h.
 *
 * Input: cg_module objects (host triple). Output: addresses of their functions, callable
 * with the kernel ABI of tir.h. One LLJIT serves the whole process session; every added
 * module gets its own resource tracker, released with the JIT. Symbols the code calls
 * (Sleef, libm) are resolved in the running process (build.ninja links libsleef with
 * --no-as-needed for this reason). Each function carries its own "target-cpu" and
 * "target-features" attributes, so code built for another CPU of the host's architecture
 * (e.g. x86-64-v3 on an AVX-512 host) is compiled for that CPU and calls the Sleef variants
 * it was built for; the caller must not add code for features the host lacks.
 *
 * Library code: never prints or exits; every LLVM error becomes a message in err.
 */
#ifndef NFC_JIT_H
#define NFC_JIT_H
#include "cg.h"

typedef struct nfc_jit nfc_jit;

/* One LLJIT for the host. Returns 0, or -1 with a message (*out = NULL). */
int   jit_create(nfc_jit **out, char *err, size_t errlen);
/* The same with the code generator's optimization level: 0 compiles machine code with the
 * -O0 code generator (fast instruction selection and register allocation, for quick
 * compiles: tests, fuzzing); 1..3 use the host's default code generator (as jit_create). */
int   jit_create_opt(nfc_jit **out, int opt_level, char *err, size_t errlen);
/* Adds m's functions; consumes m (also on failure). Rejects modules built for another
 * architecture than the host's. Returns 0 or -1 with a message. */
int   jit_add(nfc_jit *j, cg_module *m, char *err, size_t errlen);
/* A cg_options.segment_sink (ctx: the nfc_jit): queues the segment's module for the JIT's
 * compiler threads (one per online CPU, at most 8, started by a batch's first segment),
 * which verify, optimize and compile each to an object file with a target machine of their
 * own and free its IR and context, while the code generator builds the next segments.
 * jit_segments_finish waits for them, stops the threads and, with keep != 0 and when every
 * segment compiled, adds all the objects, in order, to the JIT (else none: keep = 0 after a
 * failed cg_build, so that nothing of it stays defined); it must be called after the
 * cg_build that used the sink, before its module is added. Both return 0, or -1 with a
 * message. */
int   jit_compile_async(void *ctx, const cg_target *t, void *context, void *module, const char *fn, char *err, size_t errlen);
int   jit_segments_finish(nfc_jit *j, int keep, char *err, size_t errlen);
/* Ahead-of-time builds use the compiler threads alone: jit_compiler_create makes an nfc_jit
 * without an LLJIT (code generator level opt_level, 0..3), for the sink
 * jit_compile_async_hidden (jit_compile_async with the segment's function given hidden
 * visibility: internal to the shared library it is linked into). jit_segments_write waits
 * for the threads like jit_segments_finish, then writes each segment's object to
 * STEM.segK.o and returns their paths (malloc'ed, as is the array; the caller removes the
 * files); on failure none is left. Both return 0, or -1 with a message. jit_segments_finish
 * on such an nfc_jit discards the objects (after a failed cg_build). jit_lookup and
 * jit_add do not apply to such an nfc_jit. */
int   jit_compiler_create(nfc_jit **out, int opt_level, char *err, size_t errlen);
int   jit_compile_async_hidden(void *ctx, const cg_target *t, void *context, void *module, const char *fn, char *err,
                               size_t errlen);
int   jit_segments_write(nfc_jit *j, const char *stem, char ***paths, int *npaths, char *err, size_t errlen);
/* Address of a function by its unmangled name (compiles it on first lookup), or NULL with a
 * message. */
void *jit_lookup(nfc_jit *j, const char *name, char *err, size_t errlen);
void  jit_free(nfc_jit *j);

#endif

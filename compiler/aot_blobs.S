/* compiler/aot_blobs.S: the LLVM bitcode of aot_rt.c for each architecture nfc can build
 * libraries with run-time weight loading for, embedded in nfc (aot.c links it into the
 * library module). build.ninja makes the .bc files with clang-19 before this is assembled. */
    .section .rodata
    .balign 16
    .globl nfc_aot_rt_x86_64, nfc_aot_rt_x86_64_end
nfc_aot_rt_x86_64:
    .incbin "build/aot/aot_rt_x86_64.bc"
nfc_aot_rt_x86_64_end:
    .balign 16
    .globl nfc_aot_rt_aarch64, nfc_aot_rt_aarch64_end
nfc_aot_rt_aarch64:
    .incbin "build/aot/aot_rt_aarch64.bc"
nfc_aot_rt_aarch64_end:
    .section .note.GNU-stack,"",@progbits

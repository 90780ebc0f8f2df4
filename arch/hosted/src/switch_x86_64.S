// Context switch for the hosted backend (x86-64 System V).
//
// void spindle_hosted_switch(void** save_sp, void* load_sp)
//   Saves the callee-saved registers and the SSE/x87 control words in a
//   frame on the current stack, stores the stack pointer in *save_sp, loads
//   load_sp and restores the same frame from there. Everything else is
//   caller-saved, so a voluntary switch needs no more; a preemption happens
//   inside a signal handler, whose frame already holds the full interrupted
//   state.
//
//   Frame (context_init builds the first one): [0] MXCSR, [4] x87 control
//   word, [8..0x30] r15 r14 r13 r12 rbx rbp, [0x38] return address.
//
//   The control words are loaded only when they differ from the running
//   ones, which they almost never do: LDMXCSR and FLDCW are slow (with a
//   jmp-based switch, whose pipeline is not already being refilled after a
//   mispredicted return, alternating two MXCSR values cost ~100 ns per
//   round trip in our tests). MXCSR's exception flags (bits 0-5) are not
//   compared and not restored when the control bits match: the ABI makes
//   them caller-saved, so a call (which a switch is) may change them.
//   With moves rather than pushes and pops: ~5 ns less per yield round trip.
        .text
        .globl  spindle_hosted_switch
        .type   spindle_hosted_switch, @function
        .p2align 4
spindle_hosted_switch:
        .cfi_startproc
        leaq    -0x38(%rsp), %rsp
        .cfi_adjust_cfa_offset 0x38
        stmxcsr (%rsp)
        fnstcw  4(%rsp)
        movq    %r15, 0x08(%rsp)
        movq    %r14, 0x10(%rsp)
        movq    %r13, 0x18(%rsp)
        movq    %r12, 0x20(%rsp)
        movq    %rbx, 0x28(%rsp)
        movq    %rbp, 0x30(%rsp)
        movl    (%rsp), %eax            // the running control words
        movzwl  4(%rsp), %edx
        movq    %rsp, (%rdi)
        movq    %rsi, %rsp
        xorl    (%rsp), %eax
        testl   $0xffffffc0, %eax       // MXCSR control bits differ?
        jnz     2f
        cmpw    4(%rsp), %dx
        jne     3f
1:      movq    0x08(%rsp), %r15
        movq    0x10(%rsp), %r14
        movq    0x18(%rsp), %r13
        movq    0x20(%rsp), %r12
        movq    0x28(%rsp), %rbx
        movq    0x30(%rsp), %rbp
        leaq    0x38(%rsp), %rsp
        .cfi_remember_state
        .cfi_adjust_cfa_offset -0x38
        ret
        .cfi_restore_state
2:      ldmxcsr (%rsp)
3:      fldcw   4(%rsp)
        jmp     1b
        .cfi_endproc
        .size   spindle_hosted_switch, .-spindle_hosted_switch

// First code of a new context: the initial frame built by context_init
// returns here with %r12 = entry and %r13 = arg, and %rsp 16-byte aligned.
        .globl  spindle_hosted_start
        .type   spindle_hosted_start, @function
        .p2align 4
spindle_hosted_start:
        .cfi_startproc
        .cfi_undefined rip
        xorl    %ebp, %ebp
        movq    %r12, %rdi
        movq    %r13, %rsi
        call    spindle_hosted_first_run
        ud2
        .cfi_endproc
        .size   spindle_hosted_start, .-spindle_hosted_start

        .section .note.GNU-stack,"",@progbits

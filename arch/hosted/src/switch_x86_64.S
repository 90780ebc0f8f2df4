// Context switch for the hosted backend (x86-64 System V).
//
// void spindle_hosted_switch(void** save_sp, void* load_sp)
//   Pushes the callee-saved registers and the SSE/x87 control words on the
//   current stack, stores the stack pointer in *save_sp, loads load_sp and
//   pops the same frame from there. Everything else is caller-saved, so a
//   voluntary switch needs no more; a preemption happens inside a signal
//   handler, whose frame already holds the full interrupted state.
        .text
        .globl  spindle_hosted_switch
        .type   spindle_hosted_switch, @function
        .p2align 4
spindle_hosted_switch:
        .cfi_startproc
        pushq   %rbp
        pushq   %rbx
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        subq    $8, %rsp
        stmxcsr (%rsp)
        fnstcw  4(%rsp)
        movq    %rsp, (%rdi)
        movq    %rsi, %rsp
        ldmxcsr (%rsp)
        fldcw   4(%rsp)
        addq    $8, %rsp
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbx
        popq    %rbp
        ret
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

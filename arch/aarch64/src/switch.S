// Context switch. A thread that is not running keeps its callee-saved
// registers (x19..x30) on its own stack and its sp in Context::sp. The
// kernel is built with -mgeneral-regs-only: there is no FP/SIMD state.
// Interrupts are masked across every switch (arch contract), so DAIF needs
// no saving: an interrupted thread's PSTATE is in its exception frame.
#define SWITCH_FRAME 96

// Saves the running context: x19..x30 on its stack, sp to *x0.
.macro SAVE_CONTEXT
        sub     sp, sp, #SWITCH_FRAME
        stp     x19, x20, [sp, #0]
        stp     x21, x22, [sp, #16]
        stp     x23, x24, [sp, #32]
        stp     x25, x26, [sp, #48]
        stp     x27, x28, [sp, #64]
        stp     x29, x30, [sp, #80]
        mov     x9, sp
        str     x9, [x0]
.endm

        .text
// void spindle_aarch64_switch(void** save_sp, void* load_sp)
        .globl  spindle_aarch64_switch
        .type   spindle_aarch64_switch, %function
        .balign 16
spindle_aarch64_switch:
        SAVE_CONTEXT
        mov     x0, x1
        // fall through
// void spindle_aarch64_load(void* sp): resumes a saved context.
        .globl  spindle_aarch64_load
        .type   spindle_aarch64_load, %function
spindle_aarch64_load:
        mov     sp, x0
        ldp     x19, x20, [sp, #0]
        ldp     x21, x22, [sp, #16]
        ldp     x23, x24, [sp, #32]
        ldp     x25, x26, [sp, #48]
        ldp     x27, x28, [sp, #64]
        ldp     x29, x30, [sp, #80]
        add     sp, sp, #SWITCH_FRAME
        ret
        .size   spindle_aarch64_switch, .-spindle_aarch64_switch

// void spindle_aarch64_switch_to_frame(void** save_sp, void* frame):
// saves the running context as spindle_aarch64_switch does, then the
// thread the kernel already made current resumes at its EL0 frame (the
// one its system call entered with; nothing else on its kernel stack is
// live): on that stack the kernel's hand-over (finish the switch, release
// the kernel lock), then the way back to EL0.
        .globl  spindle_aarch64_switch_to_frame
        .type   spindle_aarch64_switch_to_frame, %function
        .balign 16
spindle_aarch64_switch_to_frame:
        SAVE_CONTEXT
        mov     sp, x1
        bl      spindle_aarch64_resumed_at_frame
        b       spindle_aarch64_ret_to_user
        .size   spindle_aarch64_switch_to_frame, .-spindle_aarch64_switch_to_frame

// First code of a new context (context_init): x19 = entry, x20 = arg.
        .globl  spindle_aarch64_thread_start
        .type   spindle_aarch64_thread_start, %function
spindle_aarch64_thread_start:
        mov     x29, xzr
        mov     x30, xzr
        mov     x0, x20
        blr     x19
        brk     #1                              // entry never returns
        .size   spindle_aarch64_thread_start, .-spindle_aarch64_thread_start

// Exception vectors (VBAR_EL1) and the register frame (struct Frame in
// aarch64.h): x0..x30, the interrupted sp, ELR_EL1, SPSR_EL1.
//
// The kernel and its threads run at EL1 on SP_EL1, so an exception taken
// from a thread pushes its frame on that thread's own stack. That is what
// makes interrupt-time preemption work: handle_irq may switch threads, and
// the frame stays on the preempted thread's stack until it is resumed, on
// whichever CPU, and returns through the same exception return.
//
// A synchronous exception first checks (AT S1E1W) that the frame fits
// below sp. If it does not, sp is in an unmapped guard (a stack overflow),
// and the frame goes on this CPU's fault stack (CpuArea::fault_stack_top)
// instead of faulting again forever. TPIDR_EL0 serves as scratch there
// (an EL0 thread's value is in its EL0 entry frame, restored on the way
// back); SP_EL0 is the kernel's thread pointer and is never touched.
#define FRAME_SIZE 288
#define FRAME_TPIDR 272
#define CPUAREA_FAULT_STACK 16
#define CPUAREA_KERNEL_THREAD 32

.macro SAVE_REGS
        stp     x0, x1, [sp, #0]
        stp     x2, x3, [sp, #16]
        stp     x4, x5, [sp, #32]
        stp     x6, x7, [sp, #48]
        stp     x8, x9, [sp, #64]
        stp     x10, x11, [sp, #80]
        stp     x12, x13, [sp, #96]
        stp     x14, x15, [sp, #112]
        stp     x16, x17, [sp, #128]
        stp     x18, x19, [sp, #144]
        stp     x20, x21, [sp, #160]
        stp     x22, x23, [sp, #176]
        stp     x24, x25, [sp, #192]
        stp     x26, x27, [sp, #208]
        stp     x28, x29, [sp, #224]
        mrs     x0, elr_el1
        mrs     x1, spsr_el1
        stp     x0, x1, [sp, #256]
.endm

// Pushes a frame on the current stack; the recorded sp is the one before.
.macro PUSH_FRAME
        sub     sp, sp, #FRAME_SIZE
        SAVE_REGS
        add     x0, sp, #FRAME_SIZE
        stp     x30, x0, [sp, #240]
.endm

.macro POP_FRAME_AND_RETURN
        ldp     x0, x1, [sp, #256]
        msr     elr_el1, x0
        msr     spsr_el1, x1
        ldp     x0, x1, [sp, #0]
        ldp     x2, x3, [sp, #16]
        ldp     x4, x5, [sp, #32]
        ldp     x6, x7, [sp, #48]
        ldp     x8, x9, [sp, #64]
        ldp     x10, x11, [sp, #80]
        ldp     x12, x13, [sp, #96]
        ldp     x14, x15, [sp, #112]
        ldp     x16, x17, [sp, #128]
        ldp     x18, x19, [sp, #144]
        ldp     x20, x21, [sp, #160]
        ldp     x22, x23, [sp, #176]
        ldp     x24, x25, [sp, #192]
        ldp     x26, x27, [sp, #208]
        ldp     x28, x29, [sp, #224]
        ldr     x30, [sp, #240]
        add     sp, sp, #FRAME_SIZE
        eret
.endm

// An entry that cannot be handled (kind = vector number 0..15).
.macro UNEXPECTED kind
        .balign 0x80
        PUSH_FRAME
        mov     x0, sp
        mov     x1, #\kind
        bl      spindle_aarch64_unexpected
        b       .
.endm

        .text
        .balign 0x800
        .globl  spindle_vectors
spindle_vectors:
        // Current EL with SP_EL0: never used (the kernel runs on SP_EL1).
        UNEXPECTED 0
        UNEXPECTED 1
        UNEXPECTED 2
        UNEXPECTED 3
        // Current EL with SP_ELx: the kernel.
        .balign 0x80
        b       el1_sync
        .balign 0x80
        b       el1_irq
        UNEXPECTED 6
        UNEXPECTED 7
        // Lower EL, AArch64: user mode (threads in enter_user).
        .balign 0x80
        b       el0_sync
        .balign 0x80
        b       el0_irq
        UNEXPECTED 10
        UNEXPECTED 11
        // Lower EL, AArch32: never entered (SPSR always selects AArch64).
        UNEXPECTED 12
        UNEXPECTED 13
        UNEXPECTED 14
        UNEXPECTED 15

el1_sync:
        msr     tpidr_el0, x0
        sub     x0, sp, #FRAME_SIZE
        at      s1e1w, x0
        isb
        mrs     x0, par_el1
        tbnz    x0, #0, 1f                      // PAR_EL1.F: the frame would fault
        mrs     x0, tpidr_el0
        PUSH_FRAME
        b       2f
1:      // Overflow: frame on this CPU's fault stack, recording the real sp.
        // sp and x0 (the fault stack top) trade places by arithmetic, so no
        // second scratch register is needed (SP_EL0 holds the kernel's
        // thread pointer and must survive).
        mrs     x0, tpidr_el1
        ldr     x0, [x0, #CPUAREA_FAULT_STACK]
        add     sp, sp, x0                      // sp = old + top
        sub     x0, sp, x0                      // x0 = old
        sub     sp, sp, x0                      // sp = top
        sub     sp, sp, #FRAME_SIZE
        str     x0, [sp, #248]                  // Frame::sp: the overflowing sp
        mrs     x0, tpidr_el0
        SAVE_REGS
        str     x30, [sp, #240]
2:      mov     x0, sp
        bl      spindle_aarch64_sync
        POP_FRAME_AND_RETURN

el1_irq:
        PUSH_FRAME
        mov     x0, sp
        bl      spindle_aarch64_irq
        POP_FRAME_AND_RETURN

// From EL0. SP_EL1 is where enter_user (or the last return to EL0) left
// the thread's kernel stack, near its top, so unlike el1_sync no overflow
// check is needed. Saved besides the registers: the user's SP_EL0, TPIDR_EL0 and
// TPIDRRO_EL0; then SP_EL0 and TPIDRRO_EL0 get the kernel's values for
// this thread back from the CpuArea (EL0 can change neither there, but
// while at EL0 they held the user's stack pointer and thread pointer).
.macro EL0_ENTRY
        sub     sp, sp, #FRAME_SIZE
        SAVE_REGS
        mrs     x0, sp_el0
        stp     x30, x0, [sp, #240]
        mrs     x0, tpidr_el0
        mrs     x1, tpidrro_el0
        stp     x0, x1, [sp, #FRAME_TPIDR]
        mrs     x0, tpidr_el1
        ldp     x1, x2, [x0, #CPUAREA_KERNEL_THREAD]
        msr     sp_el0, x1
        msr     tpidrro_el0, x2
        mov     x0, sp
.endm

// System calls 25 and 26 (kSysChannelCall, kSysChannelCallRegs) go to
// the kernel's fast path first, interrupts still masked; x8 still holds
// the user's number (EL0_ENTRY clobbers only x0..x2). The syndrome must
// say SVC: an abort taken with x8 = 25 or 26 is a fault like any other.
// x0 = the frame, whose first 31 words are x0..x30.
el0_sync:
        EL0_ENTRY
        cmp     x8, #25
        ccmp    x8, #26, #4, ne                 // x8 == 25, or else x8 == 26: Z
        b.ne    1f
        mrs     x1, esr_el1
        lsr     x1, x1, #26
        cmp     x1, #0x15                       // EC: SVC from AArch64
        b.ne    1f
        bl      _ZN7spindle6kernel12syscall_fastEPm
        cbnz    w0, spindle_aarch64_ret_to_user
        mov     x0, sp
1:      bl      spindle_aarch64_el0_sync        // returns only from a system call
        b       spindle_aarch64_ret_to_user

el0_irq:
        EL0_ENTRY
        bl      spindle_aarch64_irq
        // fall through

// Back to EL0 through the frame at sp (maybe on another CPU than the
// entry: the thread may have been preempted). Interrupts masked from here
// on, since the user's SP_EL0 and TPIDRRO_EL0 replace the kernel's. First
// the kernel's last word (kernel::returning_to_user: a thread whose
// process is ending ends here instead); it may clobber any register the
// frame restores.
        .globl  spindle_aarch64_ret_to_user
spindle_aarch64_ret_to_user:
        msr     daifset, #2
        bl      spindle_aarch64_returning_to_user
        ldp     x0, x1, [sp, #FRAME_TPIDR]
        msr     tpidr_el0, x0
        msr     tpidrro_el0, x1
        ldr     x0, [sp, #248]
        msr     sp_el0, x0
        POP_FRAME_AND_RETURN

// [[noreturn]] void spindle_aarch64_enter_user(pc, sp, arg, tp): a zeroed
// frame on the current stack with x0 = arg, ELR = pc, SPSR = EL0t with
// interrupts enabled, SP_EL0 = sp, TPIDRRO_EL0 = tp; then the way back to
// EL0. The caller's frames above are never returned to: this stack is
// now the thread's kernel stack.
        .globl  spindle_aarch64_enter_user
        .type   spindle_aarch64_enter_user, %function
spindle_aarch64_enter_user:
        msr     daifset, #2
        mov     x9, sp
        and     x9, x9, #~15
        sub     sp, x9, #FRAME_SIZE
        mov     x9, sp
        add     x10, x9, #FRAME_SIZE
1:      stp     xzr, xzr, [x9], #16
        cmp     x9, x10
        b.lo    1b
        str     x2, [sp, #0]                    // x0 = arg
        str     x1, [sp, #248]                  // SP_EL0
        str     x0, [sp, #256]                  // ELR; SPSR stays 0: EL0t, DAIF clear
        str     x3, [sp, #FRAME_TPIDR + 8]      // TPIDRRO_EL0
        b       spindle_aarch64_ret_to_user
        .size   spindle_aarch64_enter_user, .-spindle_aarch64_enter_user

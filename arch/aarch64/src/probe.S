// Probes (arch/probe.h): one access with CpuArea::probe_resume armed.
// A synchronous abort at EL1 while it is armed (fault.cc) disarms it and
// resumes at the probe's resume label with x0 = ESR_EL1, x1 = FAR_EL1; an
// access that completes falls through with x0 = x1 = 0. Interrupts are
// masked throughout, so the probe cannot migrate and nothing else runs on
// this CPU while it is armed.
#define CPUAREA_PROBE_RESUME 24

.macro PROBE_BEGIN
        mrs     x5, daif
        msr     daifset, #2
        mrs     x6, tpidr_el1
        adr     x7, 1f
        str     x7, [x6, #CPUAREA_PROBE_RESUME]
.endm

.macro PROBE_END
        mov     x0, #0
        mov     x1, #0
1:      mrs     x6, tpidr_el1
        str     xzr, [x6, #CPUAREA_PROBE_RESUME]
        msr     daif, x5
.endm

        .text
// ProbeResult probe_read(const void* addr, uint64_t* value)
        .globl  _ZN7spindle4arch10probe_readEPKvPm
        .type   _ZN7spindle4arch10probe_readEPKvPm, %function
_ZN7spindle4arch10probe_readEPKvPm:
        PROBE_BEGIN
        ldr     x2, [x0]
        str     x2, [x1]
        PROBE_END
        ret
        .size   _ZN7spindle4arch10probe_readEPKvPm, .-_ZN7spindle4arch10probe_readEPKvPm

// ProbeResult probe_write(void* addr, uint64_t value)
        .globl  _ZN7spindle4arch11probe_writeEPvm
        .type   _ZN7spindle4arch11probe_writeEPvm, %function
_ZN7spindle4arch11probe_writeEPvm:
        PROBE_BEGIN
        str     x1, [x0]
        PROBE_END
        ret
        .size   _ZN7spindle4arch11probe_writeEPvm, .-_ZN7spindle4arch11probe_writeEPvm

// ProbeResult probe_exec(const void* addr). The probed code may clobber
// the caller-saved registers, so the saved DAIF lives on the stack.
        .globl  _ZN7spindle4arch10probe_execEPKv
        .type   _ZN7spindle4arch10probe_execEPKv, %function
_ZN7spindle4arch10probe_execEPKv:
        stp     x29, x30, [sp, #-32]!
        mov     x29, sp
        PROBE_BEGIN
        str     x5, [sp, #16]
        blr     x0
        mov     x0, #0
        mov     x1, #0
1:      mrs     x6, tpidr_el1
        str     xzr, [x6, #CPUAREA_PROBE_RESUME]
        ldr     x5, [sp, #16]
        msr     daif, x5
        ldp     x29, x30, [sp], #32
        ret
        .size   _ZN7spindle4arch10probe_execEPKv, .-_ZN7spindle4arch10probe_execEPKv

// Copies with user mode's permissions (LDTR/STTR: an EL1 access checked as
// EL0 would be), for system calls: a user address that EL0 may not read
// (write), or a kernel address, faults into the probe's resume instead of
// panicking. 8 bytes at a time while both sides are aligned, then one
// aligned 4-byte step, then bytes.
// ProbeResult probe_user_read(void* dst, const void* user_src, size_t n)
        .globl  _ZN7spindle4arch15probe_user_readEPvPKvm
        .type   _ZN7spindle4arch15probe_user_readEPvPKvm, %function
_ZN7spindle4arch15probe_user_readEPvPKvm:
        PROBE_BEGIN
2:      cmp     x2, #8
        b.lo    3f
        orr     x3, x0, x1
        tst     x3, #7
        b.ne    3f
        ldtr    x3, [x1]
        str     x3, [x0], #8
        add     x1, x1, #8
        sub     x2, x2, #8
        b       2b
3:      cmp     x2, #4                          // a 4-byte tail (or message) in one step
        b.lo    5f
        orr     x3, x0, x1
        tst     x3, #3
        b.ne    5f
        ldtr    w3, [x1]
        str     w3, [x0], #4
        add     x1, x1, #4
        sub     x2, x2, #4
5:      cbz     x2, 4f
        ldtrb   w3, [x1]
        strb    w3, [x0], #1
        add     x1, x1, #1
        sub     x2, x2, #1
        b       5b
4:
        PROBE_END
        ret
        .size   _ZN7spindle4arch15probe_user_readEPvPKvm, .-_ZN7spindle4arch15probe_user_readEPvPKvm

// ProbeResult probe_user_write(void* user_dst, const void* src, size_t n)
        .globl  _ZN7spindle4arch16probe_user_writeEPvPKvm
        .type   _ZN7spindle4arch16probe_user_writeEPvPKvm, %function
_ZN7spindle4arch16probe_user_writeEPvPKvm:
        PROBE_BEGIN
2:      cmp     x2, #8
        b.lo    3f
        orr     x3, x0, x1
        tst     x3, #7
        b.ne    3f
        ldr     x3, [x1], #8
        sttr    x3, [x0]
        add     x0, x0, #8
        sub     x2, x2, #8
        b       2b
3:      cmp     x2, #4
        b.lo    5f
        orr     x3, x0, x1
        tst     x3, #3
        b.ne    5f
        ldr     w3, [x1], #4
        sttr    w3, [x0]
        add     x0, x0, #4
        sub     x2, x2, #4
5:      cbz     x2, 4f
        ldrb    w3, [x1], #1
        sttrb   w3, [x0]
        add     x0, x0, #1
        sub     x2, x2, #1
        b       5b
4:
        PROBE_END
        ret
        .size   _ZN7spindle4arch16probe_user_writeEPvPKvm, .-_ZN7spindle4arch16probe_user_writeEPvPKvm

// Entry of the kernel image and of secondary CPUs: EL2 -> EL1, page tables,
// MMU on, jump to the upper half.
//
// QEMU loads the ELF at its physical load addresses (0x40080000...) and
// enters _start on CPU 0 with the MMU off, at EL1 (or EL2 with
// virtualization=on). The image is linked in the upper half (link.ld), so
// until the MMU is on only PC-relative addressing (adr/adrp) may be used:
// it yields physical addresses. The image is position independent (no
// absolute address in its text: the linker enforces it), so the upper-half
// address of a label is its physical one plus KERNEL_OFFSET. Secondaries enter spindle_secondary_entry
// (a physical address given to PSCI CPU_ON) with x0 = their CPU index.

#define DESC_TABLE      3
#define DESC_BLOCK      1
#define DESC_PAGE       3
#define ATTR_DEVICE     (0 << 2)            // MAIR index 0: Device-nGnRE
#define ATTR_NORMAL     (1 << 2)            // MAIR index 1: Normal WB RA/WA
#define AP_RO           (1 << 7)            // AP[2:1] = 10: EL1 read-only, EL0 no access
#define SH_INNER        (3 << 8)
#define AF              (1 << 10)
#define PXN             (1 << 53)
#define UXN             (1 << 54)
// W^X: only the image's text is executable (at EL1 only), and it is
// read-only; rodata and init_array are read-only, everything else the
// kernel maps is read-write and never executable.
#define RAM_BLOCK       (DESC_BLOCK | ATTR_NORMAL | SH_INNER | AF | PXN | UXN)
#define TEXT_PAGE       (DESC_PAGE | ATTR_NORMAL | SH_INNER | AF | AP_RO | UXN)
#define RODATA_PAGE     (DESC_PAGE | ATTR_NORMAL | SH_INNER | AF | AP_RO | PXN | UXN)
#define RW_PAGE         (DESC_PAGE | ATTR_NORMAL | SH_INNER | AF | PXN | UXN)
#define IDMAP_BLOCK     (DESC_BLOCK | ATTR_NORMAL | SH_INNER | AF | AP_RO)  // executable: read-only (WXN)
#define DEVICE_BLOCK    (DESC_BLOCK | ATTR_DEVICE | AF | PXN | UXN)
// Level-3 tables for the 2 MiB blocks the image spans (link.ld checks).
#define IMAGE_L3_TABLES 4

// MAIR: 0 = Device-nGnRE, 1 = Normal inner/outer WB non-transient RA/WA,
// 2 = Normal non-cacheable.
#define MAIR_VALUE      0x44ff04
// TCR: T0SZ = T1SZ = 25 (39-bit halves, walks start at L1), 4 KiB granules,
// walks inner-shareable and write-back cacheable. IPS and AS are filled in
// from ID_AA64MMFR0_EL1.
#define TCR_BASE        0xB5193519
#define TCR_AS          (1 << 36)

#define KERNEL_OFFSET   0xFFFFFF8000000000

#define SCTLR_M         (1 << 0)
#define SCTLR_A         (1 << 1)
#define SCTLR_C         (1 << 2)
#define SCTLR_I         (1 << 12)
#define SCTLR_WXN       (1 << 19)
// SCTLR_EL1 RES1 bits (ARMv8.0) with MMU and caches off, little-endian.
#define SCTLR_EL1_OFF   0x30d00800

        .section .text.boot, "ax"
        .globl  _start
_start:
        msr     daifset, #0xf
        mrs     x19, CurrentEL
        ubfx    x19, x19, #2, #2
        cmp     x19, #2
        b.eq    1f
        cmp     x19, #1
        b.eq    2f
        // EL3 (secure=on): no PSCI there, and every CPU starts here; not
        // supported. Park.
0:      wfe
        b       0b
1:      bl      el2_to_el1
2:      adrp    x0, boot_stack_top
        mov     sp, x0
        msr     tpidr_el1, xzr
        msr     tpidrro_el0, xzr
        msr     sp_el0, xzr                     // the kernel's thread pointer (none yet)

        // Zero .bss and .kbss (physical addresses: the MMU is off).
        adrp    x0, __bss_start
        add     x0, x0, :lo12:__bss_start
        adrp    x1, __bss_end
        add     x1, x1, :lo12:__bss_end
3:      cmp     x0, x1
        b.hs    4f
        str     xzr, [x0], #8
        b       3b
        // Keep .data as loaded, before anything writes it: each process
        // starts from these values (image.cc).
4:      adrp    x0, __data_start
        add     x0, x0, :lo12:__data_start
        adrp    x1, __data_end
        add     x1, x1, :lo12:__data_end
        adrp    x2, __pristine_data
        add     x2, x2, :lo12:__pristine_data
5:      cmp     x0, x1
        b.hs    6f
        ldr     x3, [x0], #8
        str     x3, [x2], #8
        b       5b
6:      adrp    x0, spindle_boot_el
        str     x19, [x0, :lo12:spindle_boot_el]

        bl      build_boot_tables

        // Everything written with the MMU (and so the data cache) off went
        // to memory; drop any stale lines for it so the cached view that
        // starts with the MMU agrees (QEMU has no caches, hardware does).
        adrp    x0, __data_start
        add     x0, x0, :lo12:__data_start
        adrp    x1, __image_end
        add     x1, x1, :lo12:__image_end
        bl      dcache_invalidate_range

        bl      mmu_enable
        adr     x0, boot_high                   // its PA; the image runs at PA + KERNEL_OFFSET
        ldr     x1, =KERNEL_OFFSET
        add     x0, x0, x1
        br      x0

boot_high:
        // Now at upper-half addresses, where adrp yields them.
        adrp    x0, boot_stack_top
        add     x0, x0, :lo12:boot_stack_top
        mov     sp, x0
        bl      set_vectors_and_drop_identity
        mov     x29, xzr                        // end of the frame chain for debuggers
        bl      spindle_aarch64_boot            // never returns
        b       .

        .globl  spindle_secondary_entry
spindle_secondary_entry:
        msr     daifset, #0xf
        mov     x20, x0                         // CPU index (PSCI context id)
        mrs     x19, CurrentEL
        ubfx    x19, x19, #2, #2
        cmp     x19, #2
        b.ne    1f
        bl      el2_to_el1
1:      msr     tpidr_el1, xzr
        msr     tpidrro_el0, xzr
        msr     sp_el0, xzr                     // the kernel's thread pointer (none yet)
        bl      mmu_enable
        adr     x0, secondary_high
        ldr     x1, =KERNEL_OFFSET
        add     x0, x0, x1
        br      x0
secondary_high:
        adrp    x1, spindle_secondary_stacks
        add     x1, x1, :lo12:spindle_secondary_stacks
        ldr     x0, [x1, x20, lsl #3]
        mov     sp, x0
        bl      set_vectors_and_drop_identity
        mov     x29, xzr
        mov     x0, x20
        bl      spindle_aarch64_secondary       // never returns
        b       .

// el2_to_el1: continues at EL1 (AArch64, SP_EL1, all of DAIF masked) at the
// return address. EL1 gets the physical counter and timer, no virtual
// offset, untrapped FP/SIMD and, with a GICv3, its system registers.
el2_to_el1:
        mov     x0, #(1 << 31)                  // HCR_EL2.RW: EL1 is AArch64; no traps, no stage 2
        msr     hcr_el2, x0
        mov     x0, #3                          // CNTHCTL_EL2: EL1PCTEN | EL1PCEN
        msr     cnthctl_el2, x0
        msr     cntvoff_el2, xzr
        mov     x0, #0x33ff                     // CPTR_EL2: RES1 bits only, nothing trapped
        msr     cptr_el2, x0
        msr     hstr_el2, xzr
        mrs     x0, midr_el1                    // EL1 reads of MIDR/MPIDR see these
        msr     vpidr_el2, x0
        mrs     x0, mpidr_el1
        msr     vmpidr_el2, x0
        mrs     x0, id_aa64pfr0_el1
        ubfx    x0, x0, #24, #4
        cbz     x0, 1f
        mov     x0, #0xf                        // ICC_SRE_EL2: SRE | Enable (EL1 may use ICC_SRE_EL1) | DFB | DIB
        msr     s3_4_c12_c9_5, x0
        isb
1:      ldr     x0, =SCTLR_EL1_OFF
        msr     sctlr_el1, x0
        mov     x0, #0x3c5                      // SPSR: EL1h, DAIF masked
        msr     spsr_el2, x0
        msr     elr_el2, x30
        eret

// build_boot_tables: the kernel's TTBR1 tables (devices, and the RAM
// around the image in 4 KiB pages with W^X permissions; memory.cc maps the
// rest of RAM as 2 MiB blocks) and the identity map TTBR0 uses while the
// MMU comes on. Physical addresses throughout.
build_boot_tables:
        adrp    x0, spindle_kernel_l1
        adrp    x1, spindle_kernel_l2_ram
        ldr     x2, =DEVICE_BLOCK               // L1[0]: PA 0..1 GiB, devices
        str     x2, [x0]
        mov     x3, #0                          // L1[1..3] -> the three RAM L2 tables
        add     x4, x0, #8
5:      add     x2, x1, x3, lsl #12
        orr     x2, x2, #DESC_TABLE
        str     x2, [x4], #8
        add     x3, x3, #1
        cmp     x3, #3
        b.lo    5b
        // The 2 MiB blocks covering [__image_start, __image_end), each
        // through one level-3 table of pages: text RX, rodata and
        // init_array R, all the rest (data, bss, and the free RAM around
        // the image) RW; nothing writable is executable.
        adrp    x2, __image_start
        and     x2, x2, #~0x1fffff              // x2: page PA
        adrp    x3, __image_end
        mov     x6, #0x1fffff
        add     x3, x3, x6
        and     x3, x3, #~0x1fffff              // x3: end of the last block
        adrp    x8, spindle_kernel_l3_image     // x8: next level-3 table
        adrp    x9, __text_end
        adrp    x10, __rodata_end
        ldr     x11, =TEXT_PAGE
        ldr     x12, =RODATA_PAGE
        ldr     x13, =RW_PAGE
        mov     x7, #0x40000000
6:      tst     x2, #0x1fffff                   // a new block: link its table
        b.ne    7f
        sub     x4, x2, x7                      // L2 index from 1 GiB up (tables are consecutive)
        lsr     x4, x4, #21
        orr     x6, x8, #DESC_TABLE
        str     x6, [x1, x4, lsl #3]
        mov     x4, x8                          // x4: this block's table
        add     x8, x8, #4096
7:      adrp    x5, __image_start
        mov     x6, x13                         // below the image: RW
        cmp     x2, x5
        b.lo    8f
        mov     x6, x11                         // text
        cmp     x2, x9
        b.lo    8f
        mov     x6, x12                         // rodata, init_array
        cmp     x2, x10
        b.lo    8f
        mov     x6, x13                         // data, bss, free RAM
8:      orr     x6, x6, x2
        ubfx    x5, x2, #12, #9
        str     x6, [x4, x5, lsl #3]
        add     x2, x2, #4096
        cmp     x2, x3
        b.lo    6b
        // Identity: L1[1] = PA 1..2 GiB as one block, where the image runs.
        adrp    x0, spindle_boot_l1_identity
        ldr     x2, =(0x40000000 | IDMAP_BLOCK)
        str     x2, [x0, #8]
        dsb     sy
        ret

// dcache_invalidate_range(x0 = start, x1 = end): DC IVAC by line.
dcache_invalidate_range:
        mrs     x3, ctr_el0
        ubfx    x3, x3, #16, #4                 // DminLine: log2(words)
        mov     x2, #4
        lsl     x2, x2, x3                      // line size in bytes
        sub     x3, x2, #1
        bic     x0, x0, x3
7:      dc      ivac, x0
        add     x0, x0, x2
        cmp     x0, x1
        b.lo    7b
        dsb     sy
        ret

// mmu_enable: MAIR/TCR/TTBRs, TLB invalidate, then SCTLR.M|C|I. Runs from
// the identity map, so the next instruction fetch still works.
mmu_enable:
        ldr     x0, =MAIR_VALUE
        msr     mair_el1, x0
        mrs     x1, id_aa64mmfr0_el1
        ldr     x0, =TCR_BASE
        and     x2, x1, #0xf                    // PARange -> IPS (at most 48 bits with 4 KiB pages)
        cmp     x2, #5
        mov     x3, #5
        csel    x2, x2, x3, ls
        orr     x0, x0, x2, lsl #32
        ubfx    x3, x1, #4, #4                  // ASIDBits: 16-bit ASIDs when available
        cmp     x3, #2
        b.ne    8f
        orr     x0, x0, #TCR_AS
8:      msr     tcr_el1, x0
        adrp    x0, spindle_boot_l1_identity
        msr     ttbr0_el1, x0
        adrp    x0, spindle_kernel_l1
        msr     ttbr1_el1, x0
        isb
        tlbi    vmalle1
        dsb     nsh
        isb
        mrs     x0, sctlr_el1
        ldr     x1, =(SCTLR_M | SCTLR_C | SCTLR_I)
        orr     x0, x0, x1
        orr     x0, x0, #SCTLR_WXN              // W^X also in hardware: writable is never executable
        bic     x0, x0, #SCTLR_A
        msr     sctlr_el1, x0
        isb
        ic      iallu                           // instructions fetched before, with the MMU off
        dsb     nsh
        isb
        ret

// set_vectors_and_drop_identity: VBAR_EL1, then TTBR0 = the empty user
// table with ASID 0 (the identity map is no longer needed; TTBR0 now holds
// user address spaces, and "none" is this table: every user address
// faults), and forget any TTBR0 translations this CPU cached.
set_vectors_and_drop_identity:
        adrp    x0, spindle_vectors             // upper half: adrp gives the VA
        add     x0, x0, :lo12:spindle_vectors
        msr     vbar_el1, x0
        adrp    x0, spindle_user_l1_none        // its VA now; TTBR0 takes the PA
        ldr     x1, =KERNEL_OFFSET
        sub     x0, x0, x1
        msr     ttbr0_el1, x0
        isb
        tlbi    vmalle1
        dsb     nsh
        isb
        ret

        .ltorg

        .data
        .balign 8
        .globl  spindle_boot_el
spindle_boot_el:
        .quad   0

        .section .kbss.boot_tables, "aw", %nobits
        .balign 4096
        .globl  spindle_kernel_l1
spindle_kernel_l1:
        .space  4096
        .globl  spindle_kernel_l2_ram
spindle_kernel_l2_ram:
        .space  3 * 4096
        .globl  spindle_boot_l1_identity
spindle_boot_l1_identity:
        .space  4096
        .globl  spindle_kernel_l3_image
spindle_kernel_l3_image:
        .space  IMAGE_L3_TABLES * 4096
        .globl  spindle_user_l1_none
spindle_user_l1_none:                           // TTBR0 of kernel threads: nothing mapped
        .space  4096

        .section .kbss.boot_stack, "aw", %nobits
        .balign 16
boot_stack:
        .space  32 * 1024
boot_stack_top:

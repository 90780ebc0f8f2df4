# Bare-metal aarch64 (QEMU `virt`) with Debian's aarch64-linux-gnu GCC 12.
#
# The Linux cross compiler is used freestanding: its libstdc++ headers serve
# the header-only parts of the standard library (<atomic>, <chrono>, <mutex>
# lock adaptors, <coroutine>, ...), and nothing of the Linux C library or
# libstdc++ is linked; the kernel image links only libgcc. Flags, and why
# each is needed: shared/docs/platform-notes.md section 2.
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(SPINDLE_CROSS_PREFIX aarch64-linux-gnu- CACHE STRING "prefix of the aarch64 cross tools")
set(CMAKE_C_COMPILER ${SPINDLE_CROSS_PREFIX}gcc)
set(CMAKE_CXX_COMPILER ${SPINDLE_CROSS_PREFIX}g++)
set(CMAKE_ASM_COMPILER ${SPINDLE_CROSS_PREFIX}gcc)
set(CMAKE_OBJCOPY ${SPINDLE_CROSS_PREFIX}objcopy CACHE FILEPATH "")
set(CMAKE_OBJDUMP ${SPINDLE_CROSS_PREFIX}objdump CACHE FILEPATH "")

# The compiler checks must not try to link a program (there is no libc).
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)

# -mcpu=cortex-a53: the CPU QEMU is run with (ARMv8.0: no LSE atomics).
# -mno-outline-atomics: otherwise libgcc's LSE helpers need __getauxval.
# -mgeneral-regs-only: the kernel never touches FP/SIMD, so a context is the
#   general registers only (and FP traps stay a bug detector).
# -mstrict-align: real hardware faults on unaligned accesses while the MMU is
#   off or on Device memory.
# -fPIE/-static-pie: the image is position independent. The kernel runs it
#   at its upper-half link address and never relocates itself: GNU ld marks
#   a static PIE whose base is not 0 ET_EXEC and writes the link-time value
#   of every relocated word (what -z apply-dynamic-relocs would ask of a
#   zero-based one), keeping the R_AARCH64_RELATIVE entries in .rela.dyn. A
#   process runs the same text at a user address with its own copy of the
#   data, relocated by those entries (arch/aarch64/src/image.cc).
#   -z text (implied): no relocation in the text, which processes share.
set(_spindle_a64_flags
  "-mcpu=cortex-a53 -mgeneral-regs-only -mno-outline-atomics -mstrict-align -ffreestanding -fPIE \
-fno-stack-protector -fno-exceptions -fno-asynchronous-unwind-tables -fno-unwind-tables")
set(CMAKE_C_FLAGS_INIT "${_spindle_a64_flags}")
set(CMAKE_CXX_FLAGS_INIT "${_spindle_a64_flags} -fno-rtti -fno-threadsafe-statics")
set(CMAKE_ASM_FLAGS_INIT "-mcpu=cortex-a53")
set(CMAKE_EXE_LINKER_FLAGS_INIT "-nostdlib -static-pie -Wl,--build-id=none")

# Only the cross tree is searched for libraries and headers.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)

set(SPINDLE_ARCH aarch64 CACHE STRING "arch backend")

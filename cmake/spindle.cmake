# Helpers shared by every folder.

# Flags of the freestanding kernel core: no exceptions, no RTTI. On hosted
# builds the core still links against nothing but the arch backend and the
# compiler's memcpy/memset.
set(SPINDLE_KERNEL_FLAGS -fno-exceptions -fno-rtti -fno-threadsafe-statics)

# Bare metal: the emulator that boots images in ctest; images are NAME.elf.
if(NOT SPINDLE_ARCH STREQUAL "hosted")
  find_program(SPINDLE_QEMU qemu-system-aarch64 REQUIRED)
  set(CMAKE_EXECUTABLE_SUFFIX .elf)
endif()

# spindle_qemu_command(VAR IMAGE CPUS GIC [PARALLEL]): in VAR, the QEMU
# command line that boots IMAGE (a path or generator expression) on CPUS
# CPUs with GIC version GIC. Deterministic (-icount shift=0,sleep=off: one
# instruction is one ns of virtual time, idle time is skipped), or with
# PARALLEL one host thread per vCPU (MTTCG: real parallelism and real
# time, a different interleaving every run); the guest's semihosting exit
# code is QEMU's exit status.
function(spindle_qemu_command var image cpus gic)
  set(clock -icount shift=0,sleep=off)
  if("PARALLEL" IN_LIST ARGN)
    set(clock)
  endif()
  set(${var} ${SPINDLE_QEMU} -M virt,gic-version=${gic} -cpu cortex-a53 -smp ${cpus} -m 256M -nic none
      -nographic -semihosting -no-reboot ${clock} -kernel ${image} PARENT_SCOPE)
endfunction()

# spindle_add_app(NAME [SOURCES...]): an app in apps/NAME, built for the
# current target as bin/NAME (bare metal: the bootable image bin/NAME.elf),
# with a ctest that runs it (hosted: on 2 vCPUs; QEMU: booted on 4 CPUs)
# and requires exit status 0.
function(spindle_add_app name)
  set(sources ${ARGN})
  if(NOT sources)
    set(sources main.cc)
  endif()
  add_executable(${name} ${sources})
  target_link_libraries(${name} PRIVATE spindle spindle_main)
  if(SPINDLE_ARCH STREQUAL "hosted")
    add_test(NAME app.${name} COMMAND ${name} --cpus=2)
    set_tests_properties(app.${name} PROPERTIES TIMEOUT 120 LABELS app)
  else()
    set_target_properties(${name} PROPERTIES LINK_DEPENDS ${SPINDLE_LINK_SCRIPT})
    spindle_qemu_command(cmd $<TARGET_FILE:${name}> 4 3)
    add_test(NAME app.${name} COMMAND ${cmd})
    set_tests_properties(app.${name} PROPERTIES TIMEOUT 300 LABELS app)
  endif()
endfunction()

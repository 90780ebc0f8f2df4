# Helpers shared by every folder.

# Flags of the freestanding kernel core: no exceptions, no RTTI. On hosted
# builds the core still links against nothing but the arch backend and the
# compiler's memcpy/memset (checked by the kernel_symbols test).
set(SPINDLE_KERNEL_FLAGS -fno-exceptions -fno-rtti -fno-threadsafe-statics)

# spindle_add_app(NAME [SOURCES...]): an app in apps/NAME, built for the
# current target as bin/NAME, with a ctest that runs it on 2 vCPUs and
# requires exit status 0.
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
  endif()
endfunction()

// Clang thread-safety annotations. They document which lock guards which data
// and let `clang -Wthread-safety` check it; on GCC they expand to nothing.
#pragma once

#if defined(__clang__)
#define SPINDLE_TSA(x) __attribute__((x))
#else
#define SPINDLE_TSA(x)
#endif

#define SPINDLE_CAPABILITY(name) SPINDLE_TSA(capability(name))
#define SPINDLE_SCOPED_CAPABILITY SPINDLE_TSA(scoped_lockable)
#define SPINDLE_GUARDED_BY(x) SPINDLE_TSA(guarded_by(x))
#define SPINDLE_PT_GUARDED_BY(x) SPINDLE_TSA(pt_guarded_by(x))
#define SPINDLE_REQUIRES(...) SPINDLE_TSA(requires_capability(__VA_ARGS__))
#define SPINDLE_EXCLUDES(...) SPINDLE_TSA(locks_excluded(__VA_ARGS__))
#define SPINDLE_ACQUIRE(...) SPINDLE_TSA(acquire_capability(__VA_ARGS__))
#define SPINDLE_RELEASE(...) SPINDLE_TSA(release_capability(__VA_ARGS__))
#define SPINDLE_TRY_ACQUIRE(...) SPINDLE_TSA(try_acquire_capability(__VA_ARGS__))
#define SPINDLE_NO_THREAD_SAFETY_ANALYSIS SPINDLE_TSA(no_thread_safety_analysis)

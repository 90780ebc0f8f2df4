// Coroutine runtime: see kernel/include/spindle/task.h (work in progress).

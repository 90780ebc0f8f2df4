// Thread pool: see kernel/include/spindle/thread_pool.h (work in progress).

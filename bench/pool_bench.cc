// spindle_pool_bench: work in progress.
#include <benchmark/benchmark.h>
BENCHMARK_MAIN();

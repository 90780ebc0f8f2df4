// Lockdep, cycle detection and the starvation watchdog (written below).
#include "ktest_util.h"

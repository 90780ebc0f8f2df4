// Priority inheritance and the hand-off locks (written below).
#include "ktest_util.h"

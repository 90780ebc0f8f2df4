// Everything an app needs: include this one header.
#pragma once

#include "spindle/app.h"
#include "spindle/console.h"
#include "spindle/cpu_mask.h"
#include "spindle/futex.h"
#include "spindle/mutex.h"
#include "spindle/panic.h"
#include "spindle/stats.h"
#include "spindle/status.h"
#include "spindle/thread.h"
#include "spindle/time.h"

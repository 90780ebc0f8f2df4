// Blocking host system calls on behalf of Spindle threads (spindle/hosted.h).
//
// A Spindle thread must not block its vCPU in a host system call: every
// other thread of that vCPU would stop too. host_call hands the call to a
// helper host thread and blocks only the Spindle thread, on a kernel
// ExternalWake that the helper posts when the call returns.
//
// Invariants:
// - g_mu protects g_queue, g_idle and g_threads. It is a host lock, so a
//   vCPU takes it only with Spindle interrupts masked: no Spindle switch can
//   happen while it is held (the rule of arch/hosted: no host lock across a
//   switch).
// - A Call is on the heap. The helper owns it from the pop until
//   post_external_wake, and never touches it afterwards; host_call's caller
//   frees it once done.word is 1, set by the kernel after the post. If the
//   kernel stops while a call runs (its caller is discarded with the other
//   live threads), the Call is leaked rather than written after free.
//   host_call_async's Call is freed by the helper before it posts the
//   caller's own ExternalWake (whose lifetime is the caller's business).
// - Helpers block every signal but the synchronous fault signals, so
//   Spindle's interrupt signals only ever reach vCPUs. They are never
//   destroyed: idle ones wait for the next call (also across kernel boots
//   in one process, as the tests do).
#include <pthread.h>
#include <signal.h>

#include <arch/arch.h>

#include "hosted_internal.h"
#include "spindle/futex.h"
#include "spindle/hosted.h"
#include "spindle/panic.h"

namespace spindle::hosted {
namespace {

struct Call {
  long (*fn)(void*);
  void* arg;
  long result = 0;
  Call* next = nullptr;
  kernel::ExternalWake* post;  // &done, or the caller's (host_call_async)
  kernel::ExternalWake done;
};

constexpr unsigned kMaxHelpers = 512;

pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
Call* g_head = nullptr;  // FIFO of calls not yet taken
Call* g_tail = nullptr;
unsigned g_queued = 0;    // calls in that FIFO
unsigned g_idle = 0;      // helpers waiting on g_cv
unsigned g_threads = 0;   // helpers in existence

void* helper(void*) {
  pthread_mutex_lock(&g_mu);
  for (;;) {
    while (!g_head) {
      ++g_idle;
      pthread_cond_wait(&g_cv, &g_mu);
      --g_idle;
    }
    Call* c = g_head;
    g_head = c->next;
    if (!g_head) g_tail = nullptr;
    --g_queued;
    pthread_mutex_unlock(&g_mu);
    c->result = c->fn(c->arg);
    kernel::ExternalWake* post = c->post;
    if (post != &c->done) delete c;     // host_call_async: nobody reads the result
    arch::hosted_post_external(post);  // c (or the caller's record) may be gone from here on
    pthread_mutex_lock(&g_mu);
  }
  return nullptr;
}

// With g_mu held. A helper with every asynchronous signal blocked.
bool start_helper() {
  sigset_t all, old;
  sigfillset(&all);
  for (int s : {SIGSEGV, SIGBUS, SIGILL, SIGFPE}) sigdelset(&all, s);
  pthread_sigmask(SIG_SETMASK, &all, &old);  // inherited by the new thread
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_t t;
  bool ok = pthread_create(&t, &attr, helper, nullptr) == 0;
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (ok) ++g_threads;
  return ok;
}

// Queues c for a helper, starting one if every helper is busy.
void submit(Call* c) {
  arch::IrqState s = arch::irq_save();
  pthread_mutex_lock(&g_mu);
  if (g_tail) {
    g_tail->next = c;
  } else {
    g_head = c;
  }
  g_tail = c;
  // Every queued call needs a helper of its own: calls may block for
  // long (waitpid), so one must never wait behind another.
  if (++g_queued > g_idle && g_threads < kMaxHelpers) {
    if (!start_helper() && g_threads == 0) panic("host_call: cannot start a helper host thread");
  } else {
    pthread_cond_signal(&g_cv);
  }
  pthread_mutex_unlock(&g_mu);
  arch::irq_restore(s);
}

}  // namespace

long host_call(long (*fn)(void*), void* arg) {
  auto* call = new Call{fn, arg};
  call->post = &call->done;
  submit(call);
  while (call->done.word.load(std::memory_order_acquire) == 0) futex_wait(&call->done.word, 0);
  long result = call->result;
  delete call;
  return result;
}

void host_call_async(long (*fn)(void*), void* arg, kernel::ExternalWake* done) {
  auto* call = new Call{fn, arg};
  call->post = done;
  submit(call);
}

}  // namespace spindle::hosted

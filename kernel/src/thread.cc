// Thread lifecycle: creation (the Tcb and the callable live at the top of
// the thread's own stack region, so creating a thread allocates nothing
// else), start, join, detach, exit, suspend/resume, priority and affinity.
#include <new>

#include "kernel.h"
#include "spindle/console.h"
#include "user.h"

namespace spindle {
namespace kernel {
namespace {

constexpr unsigned kStackCacheMax = 1024;

std::size_t round_up(std::size_t v, std::size_t to) { return (v + to - 1) / to * to; }


arch::StackRegion stack_get(std::size_t size) SPINDLE_REQUIRES(g.lock) {
  if (size == kDefaultStackSize && g.stack_cache) {
    // Cached regions are linked through their first word.
    void* base = g.stack_cache;
    g.stack_cache = *static_cast<void**>(base);
    --g.stack_cache_count;
    return {base, size};
  }
  return {};
}

// The thread's first code: runs on its new stack with the kernel lock held
// (handed over by the switch) and interrupts masked.
[[noreturn]] void thread_entry(void* arg) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
  Tcb* t = static_cast<Tcb*>(arg);
  finish_switch();
  unlock_keep_irqs_masked();
  arch::irq_enable();
  int code = t->invoke(t->callable);
  t->destroy(t->callable);
  exit_current(code, false);
}

unsigned id_bucket(ThreadId id) { return static_cast<unsigned>(id % kIdBuckets); }


Tcb* checked(detail::Tcb* h) {
  Tcb* t = Tcb::from(h);
  if (t->magic != kTcbMagic) panic("use of a Thread handle whose thread no longer exists");
  return t;
}

}  // namespace

// The next id not held by a live or unjoined thread or a running job; 0
// when every id of the kernel's range is.
ThreadId allocate_id() {
  for (ThreadId tries = g.id_end - g.first_id; tries > 0; --tries) {
    ThreadId id = g.next_id;
    g.next_id = id + 1 >= g.id_end ? g.first_id : id + 1;
    if (!find_owner(id)) {
      arch::owner_id_used(id);
      return id;
    }
  }
  return 0;
}

void thread_timeout(Timer* tm) {
  Tcb* t = static_cast<Tcb*>(Waiter::from_timer(tm));
  if (t->state == ThreadState::kBlocked) wake(t, Status::kTimedOut);
}

void register_id(Waiter* w) {
  Waiter*& head = g.by_id[id_bucket(w->head.id)];
  w->id_next = head;
  head = w;
}

void unregister_id(Waiter* w) {
  arch::owner_id_ended(w->head.id);
  for (Waiter** p = &g.by_id[id_bucket(w->head.id)]; *p; p = &(*p)->id_next) {
    if (*p == w) {
      *p = w->id_next;
      return;
    }
  }
}

void register_thread(Tcb* t) {
  g.threads.push_back(t);
  register_id(t);
  ++g.live_threads;
  if (g.starting_threads > 0) --g.starting_threads;
}

Waiter* find_owner(ThreadId id) {
  for (Waiter* w = g.by_id[id_bucket(id)]; w; w = w->id_next) {
    if (w->head.id == id) return w;
  }
  return nullptr;
}

Tcb* find_thread(ThreadId id) {
  Waiter* w = find_owner(id);
  return w && !w->async ? static_cast<Tcb*>(w) : nullptr;
}

void free_thread(Tcb* t) {
  if (t->all_link.linked()) decltype(g.threads)::remove(t);
  unregister_id(t);
  arch::context_destroy(&t->ctx);
  arch::StackRegion r = t->stack;
  t->magic = 0;
  t->~Tcb();
  if (r.size == kDefaultStackSize && g.stack_cache_count < kStackCacheMax) {
    *static_cast<void**>(r.base) = g.stack_cache;
    g.stack_cache = r.base;
    ++g.stack_cache_count;
  } else {
    // stack_free is a system call on hosted (munmap): never under the
    // kernel lock. Queue it; unlock_keep_irqs_masked releases it.
    auto* link = static_cast<arch::StackRegion*>(r.base);
    link[0] = {this_cpu().unmap_list, r.size};
    this_cpu().unmap_list = r.base;
  }
}

void release_unmapped_stacks(void* list) {
  while (list) {
    auto* link = static_cast<arch::StackRegion*>(list);
    arch::StackRegion r{list, link->size};
    list = link->base;
    arch::stack_free(r);
  }
}

void exit_current(int code, bool faulted) SPINDLE_NO_THREAD_SAFETY_ANALYSIS {
  arch::irq_save();
  if (g.lock.owner_cpu() == static_cast<int>(arch::cpu_area()->id)) {
    panic("thread '%s' %s while holding the kernel lock", this_cpu().current->name,
          faulted ? "faulted" : "exited");
  }
  g.lock.lock();
  Cpu& c = this_cpu();
  Tcb* self = c.current;
  self->exit_code = code;
  self->faulted = faulted;
  self->state = ThreadState::kDead;
  arch::owner_id_ended(self->head.id);  // other kernels see it too (its id is kept until join)
  if (self->on_exit) self->on_exit(self, code, faulted);
  timer_cancel(&self->timer);
  release_held_locks(self);
  self->joiners.wake_all();
  --g.live_threads;
  if (self->detached) c.zombie = self;  // freed by whoever runs next here
  schedule(SwitchReason::kBlock);
  panic("a dead thread was resumed");
}

}  // namespace kernel

namespace detail {

using namespace kernel;

ThreadId thread_id(const Tcb* t) { return reinterpret_cast<const kernel::Tcb*>(t)->head.id; }

Result<Tcb*> thread_create(const ThreadOptions& opts, std::size_t callable_size, std::size_t callable_align,
                           void** callable_slot) {
  if (in_user_process()) {
    // The kernel makes the thread and its user stack; the handle is the
    // thread's block on that stack (user.h), the callable goes below it.
    UserThreadCreate c{};
    c.name = user_arg(opts.name);
    c.priority = opts.priority;
    c.start_suspended = opts.start_suspended;
    c.stack_size = opts.stack_size;
    c.affinity = opts.affinity.bits();
    c.callable_size = callable_size;
    c.callable_align = callable_align;
    Status s = status_from(sys(kSysThreadCreate, user_arg(&c)));
    if (s != Status::kOk) return s;
    *callable_slot = reinterpret_cast<void*>(c.callable);
    return reinterpret_cast<Tcb*>(c.block);
  }
  if (opts.priority < kMinPriority || opts.priority > kMaxPriority) return Status::kInvalidArgument;
  if (opts.stack_size < kMinStackSize || opts.stack_size > kMaxStackSize) return Status::kInvalidArgument;
  if (callable_size > opts.stack_size / 4 || callable_align > 64) return Status::kInvalidArgument;
  std::size_t size = round_up(opts.stack_size, arch::kPageSize);
  arch::StackRegion region;
  ThreadId id;
  {
    LockGuard guard;
    if ((opts.affinity & g.online).empty()) return Status::kInvalidArgument;
    if (g.thread_limit != 0 && g.live_threads + g.starting_threads >= g.thread_limit) return Status::kLimit;
    id = allocate_id();
    if (id == 0) return Status::kLimit;  // every id is in use
    region = stack_get(size);
    ++g.starting_threads;  // counts against the limit until thread_start registers it
  }
  if (!region.base) region = arch::stack_alloc(size);
  if (!region.base) {
    LockGuard guard;
    --g.starting_threads;
    return Status::kNoMemory;
  }

  auto top = reinterpret_cast<std::uintptr_t>(region.base) + region.size;
  auto tcb_at = (top - sizeof(kernel::Tcb)) & ~std::uintptr_t{63};
  auto* t = new (reinterpret_cast<void*>(tcb_at)) kernel::Tcb;
  auto slot = (tcb_at - callable_size) & ~(callable_align - 1);
  auto sp_top = slot & ~std::uintptr_t{63};
  t->magic = kTcbMagic;
  t->head.id = id;
  const char* name = opts.name ? opts.name : "thread";
  std::size_t n = 0;
  while (n + 1 < sizeof t->name && name[n]) {
    t->name[n] = name[n];
    ++n;
  }
  t->name[n] = '\0';
  t->base_priority = opts.priority;
  t->run.priority = opts.priority;
  t->run.affinity = opts.affinity;
  t->suspend_requested = opts.start_suspended;
  t->stack = region;
  t->timer.set_kind(TimerKind::kThreadTimeout);
  t->callable = reinterpret_cast<void*>(slot);
  arch::context_init(&t->ctx, region.base, sp_top - reinterpret_cast<std::uintptr_t>(region.base), thread_entry, t);
  *callable_slot = t->callable;
  return reinterpret_cast<Tcb*>(t);
}

void thread_start(Tcb* h, Invoke invoke, Destroy destroy) {
  if (in_user_process()) {
    auto* b = reinterpret_cast<UserThreadBlock*>(h);
    b->invoke = invoke;
    b->destroy = destroy;
    (void)sys(kSysThreadStart, b->head.id);
    return;
  }
  kernel::Tcb* t = kernel::Tcb::from(h);
  t->invoke = invoke;
  t->destroy = destroy;
  LockGuard guard;
  t->cpu = this_cpu().id;
  register_thread(t);
  make_ready(t);
}

}  // namespace detail

using namespace kernel;

Result<Thread> Thread::create(const ThreadOptions& opts, int (*entry)(void*), void* arg) {
  if (!entry) return Status::kInvalidArgument;
  return create(opts, [entry, arg] { return entry(arg); });
}

Thread& Thread::operator=(Thread&& o) noexcept {
  if (this != &o) {
    if (tcb_) panic("a joinable Thread (id %llu) was overwritten: join() or detach() it first",
                    static_cast<unsigned long long>(id_));
    tcb_ = std::exchange(o.tcb_, nullptr);
    id_ = std::exchange(o.id_, 0);
  }
  return *this;
}

Thread::~Thread() {
  if (tcb_) {
    panic("Thread '%s' (id %llu) destroyed while joinable: join() or detach() it first",
          in_user_process() ? reinterpret_cast<UserThreadBlock*>(tcb_)->name : checked(tcb_)->name,
          static_cast<unsigned long long>(id_));
  }
}

Status Thread::join(int* exit_code) { return join_until(kForever, exit_code); }

namespace kernel {

Status join_thread(Tcb* t, TimePoint deadline, int* exit_code) {
  bool faulted;
  int code;
  {
    LockGuard guard;
    if (t == this_cpu().current) return Status::kDeadlock;
    while (t->state != ThreadState::kDead) {
      Status s = t->joiners.wait(deadline);
      if (t->state == ThreadState::kDead) break;
      if (s == Status::kTimedOut || s == Status::kInterrupted) return s;  // kInterrupted: the joiner's process ends
    }
    faulted = t->faulted;
    code = t->exit_code;
    free_thread(t);
  }
  if (exit_code) *exit_code = faulted ? -1 : code;
  return faulted ? Status::kFaulted : Status::kOk;
}

}  // namespace kernel

Status Thread::join_until(TimePoint deadline, int* exit_code) {
  if (!tcb_) return Status::kInvalidState;
  Status s;
  if (in_user_process()) {
    int code = 0;
    s = status_from(sys(kSysThreadJoin, id_, deadline_arg(deadline), user_arg(&code)));
    if (exit_code && (s == Status::kOk || s == Status::kFaulted)) *exit_code = code;
  } else {
    if (!arch::irqs_enabled()) return Status::kInvalidState;
    s = join_thread(checked(tcb_), deadline, exit_code);
  }
  if (s == Status::kOk || s == Status::kFaulted) {
    tcb_ = nullptr;
    id_ = 0;
  }
  return s;
}

Status Thread::detach() {
  if (!tcb_) return Status::kInvalidState;
  if (in_user_process()) {
    Status s = status_from(sys(kSysThreadDetach, id_));
    tcb_ = nullptr;
    id_ = 0;
    return s;
  }
  Tcb* t = checked(tcb_);
  {
    LockGuard guard;
    if (t->state == ThreadState::kDead) {
      free_thread(t);
    } else {
      t->detached = true;
    }
  }
  tcb_ = nullptr;
  id_ = 0;
  return Status::kOk;
}

namespace kernel {

// The checks and effect shared by Thread::set_priority/set_affinity and
// their this_thread forms (t may be the caller), and kSysThreadCtl.
Status change_priority(Tcb* t, int priority) {
  if (priority < kMinPriority || priority > kMaxPriority) return Status::kInvalidArgument;
  if (t->state == ThreadState::kDead) return Status::kInvalidState;
  t->base_priority = priority;
  update_priority(t);
  return Status::kOk;
}

Status change_affinity(Tcb* t, CpuMask mask) {
  if ((mask & g.online).empty()) return Status::kInvalidArgument;
  if (t->state == ThreadState::kDead) return Status::kInvalidState;
  set_thread_affinity(t, mask);
  return Status::kOk;
}

Status suspend_thread(Tcb* t) {
  if (t->ending) return Status::kInvalidState;  // it must reach its end
  switch (t->state) {
    case ThreadState::kDead:
      return Status::kInvalidState;
    case ThreadState::kReady:
      t->suspend_requested = true;
      g.cpus[t->cpu].rq.remove(&t->run);
      t->state = ThreadState::kSuspended;
      break;
    case ThreadState::kRunning:
      t->suspend_requested = true;
      if (t == this_cpu().current) {
        schedule(SwitchReason::kYield);  // returns once resumed
      } else {
        resched_cpu(t->cpu);
      }
      break;
    case ThreadState::kBlocked:    // held back when its wait ends
    case ThreadState::kSuspended:
      t->suspend_requested = true;
      break;
  }
  return Status::kOk;
}

Status resume_thread(Tcb* t) {
  if (t->state == ThreadState::kDead) return Status::kInvalidState;
  t->suspend_requested = false;
  if (t->state == ThreadState::kSuspended) make_ready(t);
  return Status::kOk;
}

}  // namespace kernel

namespace {
// A Thread method in a process: kSysThreadCtl on the thread's id.
std::uint64_t thread_ctl(ThreadCtl op, ThreadId id, std::uint64_t value = 0) { return sys(kSysThreadCtl, op, id, value); }
}  // namespace

Status Thread::set_priority(int priority) {
  if (!tcb_) return Status::kInvalidState;
  if (in_user_process()) return status_from(thread_ctl(kCtlSetPriority, id_, static_cast<std::uint64_t>(priority)));
  LockGuard guard;
  return change_priority(checked(tcb_), priority);
}

int Thread::priority() const {
  if (!tcb_) return -1;
  if (in_user_process()) return static_cast<int>(thread_ctl(kCtlPriority, id_));
  LockGuard guard;  // inheritance changes it from other CPUs
  return checked(tcb_)->run.priority;
}

Status Thread::set_affinity(CpuMask mask) {
  if (!tcb_) return Status::kInvalidState;
  if (in_user_process()) return status_from(thread_ctl(kCtlSetAffinity, id_, mask.bits()));
  LockGuard guard;
  return change_affinity(checked(tcb_), mask);
}

Status Thread::suspend() {
  if (!tcb_) return Status::kInvalidState;
  if (in_user_process()) return status_from(thread_ctl(kCtlSuspend, id_));
  Tcb* t = checked(tcb_);
  LockGuard guard;
  return suspend_thread(t);
}

Status Thread::resume() {
  if (!tcb_) return Status::kInvalidState;
  if (in_user_process()) return status_from(thread_ctl(kCtlResume, id_));
  Tcb* t = checked(tcb_);
  LockGuard guard;
  return resume_thread(t);
}

namespace this_thread {

void yield() {
  if (in_user_process()) {
    (void)sys(kSysYield);
    return;
  }
  LockGuard guard;
  Cpu& c = this_cpu();
  if (c.irq_depth == 0 && c.rq.top_priority() >= c.current->run.priority) schedule(SwitchReason::kYield);
}

const char* name() {
  if (in_user_process()) return static_cast<const UserThreadBlock*>(arch::thread_pointer())->name;
  return current_thread()->name;
}
int priority() {
  if (in_user_process()) return static_cast<int>(thread_ctl(kCtlPriority, 0));
  LockGuard guard;  // inheritance may change it from another CPU
  return current_thread()->run.priority;
}
unsigned cpu() {
  if (in_user_process()) return static_cast<unsigned>(thread_ctl(kCtlCpu, 0));
  return current_thread()->cpu;
}

void exit(int code) {
  if (in_user_process()) {
    (void)sys(kSysExit, static_cast<std::uint64_t>(static_cast<std::int64_t>(code)));
    __builtin_trap();  // not reached
  }
  exit_current(code, false);
}

Status set_priority(int priority) {
  if (in_user_process()) return status_from(thread_ctl(kCtlSetPriority, 0, static_cast<std::uint64_t>(priority)));
  LockGuard guard;
  return change_priority(current_thread(), priority);
}
Status set_affinity(CpuMask mask) {
  if (in_user_process()) return status_from(thread_ctl(kCtlSetAffinity, 0, mask.bits()));
  LockGuard guard;
  return change_affinity(current_thread(), mask);
}

}  // namespace this_thread

namespace kernel {

bool current_stack_guard_contains(std::uintptr_t addr) {
  Tcb* t = this_cpu().current;
  return t && !t->is_idle && arch::in_guard(t->stack, addr);
}

void stack_overflow(std::uintptr_t fault_addr) {
  Tcb* t = this_cpu().current;
  auto lo = reinterpret_cast<std::uintptr_t>(t->stack.base);
  print("*** stack overflow in thread '%s' (id %llu): fault at %p, stack %p..%p (%zu KiB); thread killed\n", t->name,
        static_cast<unsigned long long>(t->head.id), reinterpret_cast<void*>(fault_addr), reinterpret_cast<void*>(lo),
        reinterpret_cast<void*>(lo + t->stack.size), t->stack.size / 1024);
  exit_current(-1, true);
}

}  // namespace kernel
}  // namespace spindle

// Misuse is a clear panic naming the object: each case runs a kernel in a
// forked child and checks its exit status (kPanicExitCode) and its report.
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include <catch2/catch.hpp>

#include "spindle/hosted.h"
#include "spindle/spindle.h"

namespace {

struct Outcome {
  int exit_code = -1;
  std::string output;
};

// Boots a 2-vCPU kernel in a child process running body; returns how the
// child ended and what it printed.
Outcome run_in_child(int (*body)(void*)) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    spindle::hosted::Options opts;
    opts.cpus = 2;
    _exit(spindle::hosted::run(opts, body, nullptr));
  }
  close(fds[1]);
  Outcome o;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) o.output.append(buf, static_cast<std::size_t>(n));
  close(fds[0]);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return o;
}

void check_panic(const Outcome& o, const char* expected) {
  INFO("child output: " << o.output);
  CHECK(o.exit_code == spindle::kPanicExitCode);
  CHECK(o.output.find("spindle panic") != std::string::npos);
  CHECK(o.output.find(expected) != std::string::npos);
}

}  // namespace

TEST_CASE("misuse: destroying a joinable Thread panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    spindle::ThreadOptions opts;
    opts.name = "forgotten";
    auto t = spindle::Thread::create(opts, [] {});
    { spindle::Thread lost = std::move(t).value(); }  // neither joined nor detached
    return 0;
  });
  check_panic(o, "Thread 'forgotten'");
  CHECK(o.output.find("destroyed while joinable") != std::string::npos);
}

TEST_CASE("misuse: overwriting a joinable Thread panics", "[death]") {
  Outcome o = run_in_child([](void*) {
    spindle::Thread a = std::move(spindle::Thread::create({}, [] {})).value();
    a = std::move(spindle::Thread::create({}, [] {})).value();
    return 0;
  });
  check_panic(o, "was overwritten");
}

TEST_CASE("misuse: unlocking a mutex the caller does not hold panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::Mutex m("ledger");
    m.unlock();
    return 0;
  });
  check_panic(o, "mutex 'ledger'");
}

TEST_CASE("misuse: re-locking a held mutex is reported as a self-deadlock", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::Mutex m("twice");
    m.lock();
    m.lock();
    return 0;
  });
  check_panic(o, "self-deadlock");
  CHECK(o.output.find("'twice'") != std::string::npos);
}

TEST_CASE("misuse: destroying a held mutex panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    {
      spindle::Mutex m("scoped");
      m.lock();
    }
    return 0;
  });
  check_panic(o, "mutex 'scoped' destroyed while held");
}

TEST_CASE("a clean run exits with the main thread's result", "[death]") {
  Outcome o = run_in_child([](void*) { return 7; });
  CHECK(o.exit_code == 7);
  CHECK(o.output.find("panic") == std::string::npos);
}

// ---------------------------------------------------------------------------
// Sync-object misuse. Each report must name the object.

namespace {

// In the child kernel: waits until thread `id` sleeps (on whatever it was
// told to wait for). Returns false after 10 s.
bool wait_blocked(spindle::ThreadId id) {
  spindle::TimePoint end = spindle::deadline_after(std::chrono::seconds(10));
  while (spindle::Clock::now() < end) {
    spindle::ThreadStats s;
    if (spindle::thread_stats(id, &s) == spindle::Status::kOk && s.state[0] == 'b') return true;
    spindle::this_thread::yield();
  }
  return false;
}

// Starts a thread running fn and returns once it is blocked (the child
// exits with 99 if it never blocks, which fails the exit-status check).
template <class F>
void start_blocked_waiter(F fn) {
  spindle::ThreadOptions opts;
  opts.name = "waiter";
  auto r = spindle::Thread::create(opts, fn);
  if (!r.ok()) _exit(98);
  static spindle::Thread t;
  t = std::move(r).value();
  if (!wait_blocked(t.id())) _exit(99);
  (void)t.detach();
}

}  // namespace

TEST_CASE("misuse: unlocking a FairMutex nobody holds panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::FairMutex m("turnstile");
    m.unlock();
    return 0;
  });
  check_panic(o, "fair mutex 'turnstile'");
  CHECK(o.output.find("nobody holds") != std::string::npos);
}

TEST_CASE("misuse: unlocking a FairMutex another thread holds panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::FairMutex m("gatekeeper");
    static std::atomic<bool> locked{false};
    spindle::Thread t = std::move(spindle::Thread::create({}, [] {
                                    m.lock();
                                    locked = true;
                                    spindle::this_thread::sleep_for(std::chrono::seconds(30));
                                  })).value();
    while (!locked.load()) spindle::this_thread::yield();
    m.unlock();  // not ours
    t.join();
    return 0;
  });
  check_panic(o, "fair mutex 'gatekeeper', held by thread");
}

TEST_CASE("misuse: re-locking a held FairMutex is reported as a self-deadlock", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::FairMutex m("again");
    m.lock();
    m.lock();
    return 0;
  });
  check_panic(o, "self-deadlock");
  CHECK(o.output.find("fair mutex 'again'") != std::string::npos);
}

TEST_CASE("misuse: destroying a held FairMutex panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    {
      spindle::FairMutex m("fair scoped");
      m.lock();
    }
    return 0;
  });
  check_panic(o, "fair mutex 'fair scoped' destroyed while held");
}

TEST_CASE("misuse: destroying a held RecursiveMutex panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    {
      spindle::RecursiveMutex m("nest");
      m.lock();
      m.lock();
      m.unlock();  // depth 1: still held
    }
    return 0;
  });
  check_panic(o, "recursive mutex 'nest' destroyed while held");
}

TEST_CASE("misuse: unlocking a RecursiveMutex the caller does not hold panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::RecursiveMutex m("not mine");
    m.unlock();
    return 0;
  });
  check_panic(o, "recursive mutex 'not mine'");
}

TEST_CASE("misuse: unlocking a SpinLock nobody holds panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::SpinLock s("ticket");
    s.unlock();
    return 0;
  });
  check_panic(o, "spin lock 'ticket'");
}

TEST_CASE("misuse: unlocking a SpinLock another thread holds panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::SpinLock s("borrowed");
    s.lock();
    spindle::Thread t = std::move(spindle::Thread::create({}, [] { s.unlock(); })).value();
    t.join();
    return 0;
  });
  check_panic(o, "spin lock 'borrowed', held by thread");
}

TEST_CASE("misuse: re-locking a held SpinLock is reported as a self-deadlock", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::SpinLock s("spin twice");
    s.lock();
    s.lock();
    return 0;
  });
  check_panic(o, "self-deadlock");
  CHECK(o.output.find("spin lock 'spin twice'") != std::string::npos);
}

TEST_CASE("misuse: write-unlocking an RwLock the caller does not hold panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::RwLock rw("table");
    rw.unlock();
    return 0;
  });
  check_panic(o, "rwlock 'table'");
}

TEST_CASE("misuse: write-unlocking an RwLock that is only read-held panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::RwLock rw("read only");
    rw.lock_shared();
    rw.unlock();
    return 0;
  });
  check_panic(o, "rwlock 'read only'");
}

TEST_CASE("misuse: unlock_shared on an RwLock with no reader panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::RwLock rw("catalog");
    rw.lock_shared();
    rw.unlock_shared();
    rw.unlock_shared();  // one too many
    return 0;
  });
  check_panic(o, "rwlock 'catalog'");
  CHECK(o.output.find("no reader") != std::string::npos);
}

TEST_CASE("misuse: re-write-locking a held RwLock is reported as a self-deadlock", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::RwLock rw("rw twice");
    rw.lock();
    rw.lock();
    return 0;
  });
  check_panic(o, "self-deadlock");
  CHECK(o.output.find("rwlock 'rw twice'") != std::string::npos);
}

TEST_CASE("misuse: destroying a read-held RwLock panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    {
      spindle::RwLock rw("in use");
      rw.lock_shared();
    }
    return 0;
  });
  check_panic(o, "rwlock 'in use' destroyed while in use");
}

TEST_CASE("misuse: destroying a Semaphore with a waiter panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::Semaphore* s = new spindle::Semaphore(0, 1, "tickets");
    start_blocked_waiter([] { s->acquire(); });
    delete s;
    return 0;
  });
  check_panic(o, "semaphore 'tickets' destroyed while 1 thread(s) wait on it");
}

TEST_CASE("misuse: destroying a CondVar with a waiter panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::Mutex m("cv lock");
    static spindle::CondVar* cv = new spindle::CondVar("signal");
    start_blocked_waiter([] {
      m.lock();
      cv->wait(m);
      m.unlock();
    });
    delete cv;
    return 0;
  });
  check_panic(o, "condvar 'signal' destroyed while 1 thread(s) wait on it");
}

TEST_CASE("misuse: destroying an Event with a waiter panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::Event* ev = new spindle::Event("doorbell");
    start_blocked_waiter([] { ev->wait(); });
    delete ev;
    return 0;
  });
  check_panic(o, "event 'doorbell' destroyed while 1 thread(s) wait on it");
}

TEST_CASE("misuse: destroying a Latch with a waiter panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::Latch* l = new spindle::Latch(1, "countdown");
    start_blocked_waiter([] { l->wait(); });
    delete l;
    return 0;
  });
  check_panic(o, "latch 'countdown' destroyed while 1 thread(s) wait on it");
}

TEST_CASE("misuse: destroying a Barrier with a waiter panics with its name", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::Barrier<>* b = new spindle::Barrier<>(2, "muster");
    start_blocked_waiter([] { b->arrive_and_wait(); });
    delete b;
    return 0;
  });
  check_panic(o, "barrier 'muster' destroyed while 1 thread(s) wait on it");
}

TEST_CASE("misuse: reading the value of a failed Queue get panics naming the status", "[death]") {
  Outcome o = run_in_child([](void*) {
    static spindle::Queue<int> q(1, "empty");
    spindle::Result<int> r = q.try_get();
    return r.value();
  });
  CHECK(o.exit_code == spindle::kPanicExitCode);
  CHECK(o.output.find("would block") != std::string::npos);
}

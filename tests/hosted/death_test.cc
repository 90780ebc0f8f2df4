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

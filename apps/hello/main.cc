// hello: the smallest Spindle app. Starts one thread per CPU, each greets
// from where it runs, and the main thread joins them.
#include <spindle/spindle.h>

int spindle_main(int, char**) {
  unsigned cpus = spindle::system_stats().cpus;
  spindle::print("hello from Spindle: %u CPUs, main thread '%s' (id %llu)\n", cpus, spindle::this_thread::name(),
                 static_cast<unsigned long long>(spindle::this_thread::id()));
  spindle::Thread workers[spindle::kMaxCpus];
  for (unsigned i = 0; i < cpus; ++i) {
    spindle::ThreadOptions opts;
    opts.name = "greeter";
    opts.affinity = spindle::CpuMask::only(i);
    auto t = spindle::Thread::create(opts, [i] {
      spindle::print("  hello from thread %llu on cpu %u\n", static_cast<unsigned long long>(spindle::this_thread::id()),
                     spindle::this_thread::cpu());
      return static_cast<int>(i);
    });
    if (!t.ok()) {
      spindle::print("cannot create a thread: %s\n", spindle::to_string(t.status()));
      return 1;
    }
    workers[i] = std::move(t).value();
  }
  int failures = 0;
  for (unsigned i = 0; i < cpus; ++i) {
    int code = -1;
    if (workers[i].join(&code) != spindle::Status::kOk || code != static_cast<int>(i)) ++failures;
  }
  spindle::print("%s\n", failures == 0 ? "all greeters joined" : "a greeter failed");
  return failures == 0 ? 0 : 1;
}

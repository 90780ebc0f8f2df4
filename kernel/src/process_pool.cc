// ProcessPool (spindle/process_pool.h): the worker process's loop and the
// driver side of a job.
//
// Wire: a job message is a PoolRequest and the packed arguments; the reply
// is an int32 status (kOk) and the result's bytes. A worker never replies
// with a failure: it either answers or dies, and a dead worker shows as
// kClosed on its channel.
//
// Invariants: a Worker is either in idle_ or owned by exactly one driver
// thread (the one that took it), which alone touches its Process and
// Channel; so replace() needs no lock but lock_ for the stats.
#include "spindle/process_pool.h"

#include <new>

namespace spindle {

namespace detail {

int pool_worker() {
  Result<Channel> ch = Channel::adopt(this_process::handle(0));
  if (!ch.ok()) return 1;
  std::unique_ptr<std::byte[]> in(new (std::nothrow) std::byte[kMaxMessageBytes]);
  std::unique_ptr<std::byte[]> out(new (std::nothrow) std::byte[kMaxMessageBytes]);
  if (!in || !out) return 1;
  for (;;) {
    Result<Received> r = ch->recv(std::span<std::byte>(in.get(), kMaxMessageBytes));
    if (!r.ok()) return r.status() == Status::kClosed ? 0 : 1;
    if (r->bytes < sizeof(PoolRequest)) return 1;  // not from a ProcessPool
    PoolRequest req;
    std::memcpy(&req, in.get(), sizeof req);
    auto invoke = reinterpret_cast<PoolInvoke>(code_address(req.invoke));
    std::int32_t ok = static_cast<std::int32_t>(Status::kOk);
    std::memcpy(out.get(), &ok, sizeof ok);
    std::size_t n = invoke(code_address(req.fn), in.get() + sizeof req, r->bytes - sizeof req, out.get() + sizeof ok);
    if (ch->send(std::span<const std::byte>(out.get(), sizeof ok + n)) != Status::kOk) return 0;
  }
}

}  // namespace detail

ProcessPool::ProcessPool(unsigned workers, const ProcessOptions& worker_opts)
    : nworkers_(workers),
      opts_(worker_opts),
      idle_(workers ? workers : 1, "idle pool workers"),
      drivers_(workers, ThreadPoolOptions{.name = "process pool"}) {
  opts_.handles = {};
  if (workers == 0) {
    status_ = Status::kInvalidArgument;
    return;
  }
  if (drivers_.status() != Status::kOk) {
    status_ = drivers_.status();
    return;
  }
  workers_.reset(new (std::nothrow) Worker[workers]);
  if (!workers_) {
    status_ = Status::kNoMemory;
    return;
  }
  for (unsigned i = 0; i < workers; ++i) {
    Status s = start_worker(&workers_[i]);
    if (s != Status::kOk) {
      status_ = s;
      return;
    }
    (void)idle_.put(&workers_[i]);
  }
}

Status ProcessPool::start_worker(Worker* w) {
  Result<std::pair<Channel, Channel>> pair = Channel::create();
  if (!pair.ok()) return pair.status();
  Handle give[] = {pair->second.handle()};
  ProcessOptions o = opts_;
  o.handles = give;
  Result<Process> p = Process::spawn(o, &detail::pool_worker);
  if (!p.ok()) return p.status();
  w->proc = std::move(p).value();
  w->ch = std::move(pair->first);
  return Status::kOk;  // pair->second (our copy of the worker's end) closes here
}

void ProcessPool::replace(Worker* w) {
  w->ch.close();
  Result<ExitStatus> st = w->proc.join();
  {
    std::lock_guard<Mutex> g(lock_);
    ++stats_.crashes;
    if (st.ok()) stats_.last_crash = *st;
  }
  if (start_worker(w) == Status::kOk) {
    std::lock_guard<Mutex> g(lock_);
    ++stats_.replaced;
  }
}

Status ProcessPool::execute(const detail::PoolMessage& m, std::byte* out, std::size_t size) {
  if (status_ != Status::kOk) return status_;
  if (!m.bytes) return m.too_large ? Status::kInvalidArgument : Status::kNoMemory;
  Result<Worker*> taken = idle_.get();
  if (!taken.ok()) return taken.status();
  Worker* w = *taken;
  if (!w->proc.joinable() && start_worker(w) != Status::kOk) {  // a replacement failed earlier
    (void)idle_.put(w);
    return Status::kNoMemory;
  }
  std::int32_t hdr = 0;
  std::byte small[64];
  std::unique_ptr<std::byte[]> big;
  std::byte* reply = small;
  std::size_t want = sizeof hdr + size;
  if (want > sizeof small) {
    big.reset(new (std::nothrow) std::byte[want]);
    if (!big) {
      (void)idle_.put(w);
      return Status::kNoMemory;
    }
    reply = big.get();
  }
  Status s = w->ch.send(std::span<const std::byte>(m.bytes.get(), m.size));
  Result<Received> r = s == Status::kOk ? w->ch.recv(std::span<std::byte>(reply, want)) : Result<Received>(s);
  if (r.ok() && r->bytes == want) {
    std::memcpy(&hdr, reply, sizeof hdr);
    std::memcpy(out, reply + sizeof hdr, size);
    std::lock_guard<Mutex> g(lock_);
    ++stats_.jobs;
    s = static_cast<Status>(hdr);
  } else {
    // The worker died on this job (or answered nonsense): report it on this
    // job's future and put a fresh worker in its place.
    replace(w);
    s = Status::kFaulted;
  }
  (void)idle_.put(w);
  return s;
}

Status ProcessPool::shutdown(bool wait) {
  Status s = drivers_.shutdown(wait);
  if (s != Status::kOk) return s;
  for (unsigned i = 0; workers_ && i < nworkers_; ++i) {
    Worker& w = workers_[i];
    w.ch.close();  // the worker's recv sees kClosed and it returns 0
    if (w.proc.joinable()) (void)w.proc.join();
  }
  return Status::kOk;
}

ProcessPoolStats ProcessPool::stats() const {
  std::lock_guard<Mutex> g(lock_);
  return stats_;
}

}  // namespace spindle

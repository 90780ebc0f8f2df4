// bank_account: fine-grained locking with one spindle::Mutex per account.
//
// Pattern: a transfer must hold the locks of both accounts it touches. Two
// tellers moving money in opposite directions (A->B and B->A) would deadlock
// if each took "its" source account first, so every transfer locks the two
// accounts in one global order: lower account index first. An auditor
// thread takes every account lock (in the same order) to read a consistent
// snapshot while the tellers keep working. Overdrafts are refused.
//
// Checks (exit 1 if any fails):
//  - the total over all accounts never changes: at the end, and in every
//    audit snapshot taken mid-run (a broken lock loses or duplicates money,
//    because the read-modify-write below is spread over several steps);
//  - no balance ever goes negative;
//  - every transfer was either done or refused (the counts add up).
#include <atomic>
#include <cstdint>

#include <spindle/spindle.h>

namespace {

constexpr int kAccounts = 8;
constexpr int kTellers = 4;
constexpr int kTransfersPerTeller = 20000;
constexpr long kInitialBalance = 1000;

struct Account {
  spindle::Mutex lock{"account"};
  long balance = kInitialBalance;  // guarded by lock
};

Account g_accounts[kAccounts];
std::atomic<long> g_done{0}, g_refused{0}, g_negative_seen{0};
std::atomic<long> g_audits{0}, g_bad_audits{0};
std::atomic<bool> g_tellers_finished{false};

// Small per-thread pseudo-random generator (xorshift32); no host state.
std::uint32_t next_random(std::uint32_t& s) {
  s ^= s << 13;
  s ^= s >> 17;
  s ^= s << 5;
  return s;
}

void transfer(int from, int to, long amount) {
  // The global order: lower index first, whichever way the money flows.
  Account& first = g_accounts[from < to ? from : to];
  Account& second = g_accounts[from < to ? to : from];
  spindle::Guard hold_first(first.lock);
  spindle::Guard hold_second(second.lock);
  long have = g_accounts[from].balance;
  if (have < amount) {
    g_refused.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  // Read, think, write: without the locks another teller could slip in here.
  spindle::this_thread::yield();
  g_accounts[from].balance = have - amount;
  g_accounts[to].balance += amount;
  if (g_accounts[from].balance < 0) g_negative_seen.fetch_add(1, std::memory_order_relaxed);
  g_done.fetch_add(1, std::memory_order_relaxed);
}

// Takes every lock in index order, sums, releases in reverse order.
long audit() {
  for (auto& a : g_accounts) a.lock.lock();
  long total = 0;
  for (auto& a : g_accounts) {
    total += a.balance;
    if (a.balance < 0) g_negative_seen.fetch_add(1, std::memory_order_relaxed);
  }
  for (int i = kAccounts - 1; i >= 0; --i) g_accounts[i].lock.unlock();
  return total;
}

}  // namespace

int spindle_main(int, char**) {
  const long expected_total = kAccounts * kInitialBalance;
  spindle::print("bank_account: %d accounts of %ld, %d tellers x %d random transfers\n", kAccounts,
                 kInitialBalance, kTellers, kTransfersPerTeller);
  spindle::print("  each transfer locks both accounts, lower index first (no deadlock possible)\n");

  spindle::Thread tellers[kTellers];
  for (int i = 0; i < kTellers; ++i) {
    spindle::ThreadOptions opts;
    opts.name = "teller";
    auto t = spindle::Thread::create(opts, [i] {
      std::uint32_t seed = 0x9e3779b9u * static_cast<std::uint32_t>(i + 1);
      for (int n = 0; n < kTransfersPerTeller; ++n) {
        int from = static_cast<int>(next_random(seed) % kAccounts);
        int to = static_cast<int>(next_random(seed) % (kAccounts - 1));
        if (to >= from) ++to;  // a different account
        transfer(from, to, 1 + static_cast<long>(next_random(seed) % 200));
      }
    });
    if (!t.ok()) {
      spindle::print("cannot start teller %d: %s\n", i, spindle::to_string(t.status()));
      return 1;
    }
    tellers[i] = std::move(t).value();
  }
  spindle::ThreadOptions aopts;
  aopts.name = "auditor";
  auto auditor = spindle::Thread::create(aopts, [expected_total] {
    while (!g_tellers_finished.load(std::memory_order_acquire)) {
      if (audit() != expected_total) g_bad_audits.fetch_add(1, std::memory_order_relaxed);
      g_audits.fetch_add(1, std::memory_order_relaxed);
      spindle::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  if (!auditor.ok()) {
    spindle::print("cannot start auditor: %s\n", spindle::to_string(auditor.status()));
    return 1;
  }
  for (auto& t : tellers) t.join();
  g_tellers_finished.store(true, std::memory_order_release);
  auditor->join();

  long total = audit();
  spindle::print("  balances at the end:");
  for (auto& a : g_accounts) spindle::print(" %ld", a.balance);
  spindle::print("\n  transfers done %ld, refused (would overdraw) %ld, audits %ld\n", g_done.load(),
                 g_refused.load(), g_audits.load());

  bool ok = true;
  if (total != expected_total) {
    spindle::print("FAIL: total is %ld, expected %ld: money was created or destroyed\n", total, expected_total);
    ok = false;
  }
  if (g_bad_audits.load() != 0) {
    spindle::print("FAIL: %ld mid-run audits saw a wrong total\n", g_bad_audits.load());
    ok = false;
  }
  if (g_negative_seen.load() != 0) {
    spindle::print("FAIL: a balance went negative %ld times\n", g_negative_seen.load());
    ok = false;
  }
  if (g_done.load() + g_refused.load() != long{kTellers} * kTransfersPerTeller) {
    spindle::print("FAIL: transfers done + refused != transfers attempted\n");
    ok = false;
  }
  if (ok) spindle::print("OK: total %ld as expected, no negative balance, every audit consistent\n", total);
  else spindle::print("FAILED\n");
  return ok ? 0 : 1;
}

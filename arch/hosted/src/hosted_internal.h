// Private to the hosted backend.
#pragma once

#include <cstddef>
#include <cstdint>

#include <span>

#include <arch/arch.h>

#include "spindle/handle.h"

namespace spindle {
enum class FaultKind : std::uint8_t;
}

namespace spindle::hosted {
// Processes (process.cc). process_main runs a process started by
// Process::spawn (main.cc calls it on the `--spindle-process` token).
int process_main();
// A fault is ending this process: in a spawned process, records it for
// the parent (the first one only). Any context, also a signal handler.
void process_fault(FaultKind kind, std::uintptr_t address);
bool is_spawned_process();

// Handles (channel.cc). An Object is what a handle names.
struct Object;
// What a spawned process needs to adopt a handle: the descriptor it finds
// at `fd`, and the object's kind, rights and size.
struct SpawnedHandle {
  std::uint8_t kind;
  std::uint8_t access;
  int fd;
  std::uint64_t size;
};
// References to the objects of hs (kNotFound, none taken, if one is bad).
Status acquire_handles(std::span<const Handle> hs, Object** objs);
void release_handles(Object** objs, std::size_t n);
SpawnedHandle spawn_handle_info(const Object* o);
// In a spawned process: puts the inherited descriptors in the handle table
// as this_process::handle(0..n-1).
void adopt_inherited(const SpawnedHandle* hs, unsigned n);

// Words shared with other processes (shared_words.cc). SharedMemory
// mappings are registered so that futex calls on their words go to the
// host's futex (arch::foreign_word); kLimit when the registry is full.
Status register_shared(const void* data, std::size_t size);
// 0 once the mapping at data is no longer registered; while threads or
// coroutine jobs of this process wait on its words, how many (nothing
// changed).
unsigned unregister_shared(const void* data);
// The process tree's slot table: a child's slot names its thread ids and
// tells whether it still runs. The parent takes one at spawn (creating the
// table in the root on first use; host thread context) and gives it back
// once it reaped the child; the child finds the table at kTreeFd and holds
// its slot for life (tree_adopt, on its main host thread, before booting).
inline constexpr int kTreeFd = 99;
struct TreeSlot {
  unsigned slot;
  std::uint32_t first;  // the index in the slot's id range where the child starts
  int fd;  // the table's descriptor, for the child's kTreeFd
};
// Makes sure the table exists (the root creates it before its first
// shared mapping too: see shared_words.cc). Host thread context.
bool tree_ready();
bool tree_slot_for_child(TreeSlot* out);  // false: no table, or every slot is live
void tree_slot_done(unsigned slot);
bool tree_adopt(unsigned slot, std::uint32_t first);
// The thread ids this process's kernel hands out (BootArgs).
void tree_id_range(kernel::BootArgs* args);
}  // namespace spindle::hosted

namespace spindle::arch {

inline constexpr unsigned kMaxVcpus = 64;

// Words that wake all (arch.h: foreign_wait) on which a helper host thread
// sleeps for a thread of this process (shared_words.cc), for idle vCPUs to
// sleep on as well (cpu.cc). A slot is free while `word` is null; its
// owner claims it by setting `word` (so a claim that loses the race
// writes nothing), then writes `expected`. Readers take a snapshot and
// may see a slot in transition (a new word with the last owner's
// expected value): at worst they sleep on a word that wakes all for
// nothing, or look again at once.
struct SleptWord {
  std::atomic<const std::atomic<std::uint32_t>*> word{nullptr};
  std::atomic<std::uint32_t> expected{0};
};
inline constexpr unsigned kMaxSleptWords = 32;
extern SleptWord g_slept[kMaxSleptWords];

void hosted_set_cpu_count(unsigned n);
// post_external_wake for host threads (not vCPUs): dropped (its `delivered`
// called) when no kernel runs. Any host thread.
void hosted_post_external(kernel::ExternalWake* ev);
// vCPU i runs on the i-th host core of mask (cyclically); 0: core i % cores.
void hosted_set_pin_mask(std::uint64_t mask);
// Heap and thread stacks this process may use, in bytes; 0: no limit.
void hosted_set_memory_limit(std::uint64_t bytes);
std::uint64_t hosted_memory_used();
bool hosted_memory_limited();
bool hosted_charge(std::size_t bytes);  // false (nothing charged) past the limit
void hosted_uncharge(std::size_t bytes);

// Whether the calling host thread is a vCPU. A host-thread property, not a
// per-vCPU one, so a thread_local is right even across migrations.
bool hosted_is_vcpu();
void hosted_mark_vcpu();
void hosted_unmark_vcpu();

// Clock: calibrated once per process; now_ns() is in CLOCK_MONOTONIC's time
// base (up to the calibration error, a few ppm).
void hosted_calibrate_clock();
std::uint64_t hosted_to_monotonic(std::uint64_t ns);
struct ClockCalibration {
  std::uint64_t mult;  // 0: not calibrated (or no invariant TSC)
  std::uint64_t tsc0;
  std::uint64_t mono0;
};
ClockCalibration hosted_clock_calibration();
void hosted_adopt_clock_calibration(const ClockCalibration& c);

}  // namespace spindle::arch

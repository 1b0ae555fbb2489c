#include "backend/cpu/threadpool.h"

#include <algorithm>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
static inline void cpu_relax() { _mm_pause(); }
#else
static inline void cpu_relax() {}
#endif

namespace mamba::cpu {

// Waiting goes through three stages: spin (cheapest wake-up, right when all threads have a
// core), then yield the core (when other processes compete for the cores, a spinning thread
// would burn the time slice that the thread it waits for needs), then, for idle workers,
// sleep on the condition variable.
constexpr int kSpinIterations = 1 << 12;
constexpr int kYieldIterations = 1 << 12;
constexpr int64_t kPartsPerThread = 4;  // enough to even out, few enough to stay cheap

static uint32_t gen_of(uint64_t c) { return uint32_t(c >> 32); }
static uint32_t parts_of(uint64_t c) { return uint32_t(c >> 16) & 0xffffu; }
static uint32_t next_of(uint64_t c) { return uint32_t(c) & 0xffffu; }

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = int(std::max(1u, std::thread::hardware_concurrency()));
  n_threads_ = std::min(n_threads, 4096);
  for (int i = 1; i < n_threads_; i++) threads_.emplace_back([this] { worker(); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  cursor_.store(uint64_t(gen_ + 1) << 32);  // a new generation with no parts: wakes everyone
  { std::lock_guard<std::mutex> lk(mu_); }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void ThreadPool::work_on(uint32_t gen) {
  uint64_t c = cursor_.load(std::memory_order_acquire);
  while (gen_of(c) == gen && next_of(c) < parts_of(c)) {
    if (!cursor_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel)) continue;
    // Part next_of(c) is ours. The job's fields stay valid: the caller does not start another
    // job before this part is counted done.
    const int64_t begin = int64_t(next_of(c)) * part_;
    (*fn_)(begin, std::min(n_, begin + part_));
    parts_done_.fetch_add(1, std::memory_order_release);
    c = cursor_.load(std::memory_order_acquire);
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const Fn& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  if (n_threads_ == 1 || n <= grain) {
    fn(0, n);
    return;
  }
  // Parts of at least `grain` items, rounded to a multiple of it, about kPartsPerThread each.
  const int64_t target = (n + n_threads_ * kPartsPerThread - 1) / (n_threads_ * kPartsPerThread);
  const int64_t part = (std::max(target, grain) + grain - 1) / grain * grain;
  const uint32_t n_parts = uint32_t((n + part - 1) / part);
  fn_ = &fn;
  n_ = n;
  part_ = part;
  parts_done_.store(0, std::memory_order_relaxed);
  gen_++;
  // seq_cst: publishes the job's fields, and pairs with the sleepers_ check below.
  cursor_.store(uint64_t(gen_) << 32 | uint64_t(n_parts) << 16);
  if (sleepers_.load() > 0) {
    // Taking the mutex orders this notify after a worker that is going to sleep has entered
    // its wait, so the wake-up cannot be lost.
    { std::lock_guard<std::mutex> lk(mu_); }
    cv_.notify_all();
  }
  work_on(gen_);
  for (int i = 0; parts_done_.load(std::memory_order_acquire) < int(n_parts); i++) {
    if (i < kSpinIterations)
      cpu_relax();
    else
      std::this_thread::yield();
  }
}

void ThreadPool::worker() {
  uint32_t seen = 0;
  for (;;) {
    int spins = 0;
    uint32_t g;
    while ((g = gen_of(cursor_.load(std::memory_order_acquire))) == seen) {
      if (++spins < kSpinIterations) {
        cpu_relax();
      } else if (spins < kSpinIterations + kYieldIterations) {
        std::this_thread::yield();
      } else {
        std::unique_lock<std::mutex> lk(mu_);
        sleepers_.fetch_add(1);
        cv_.wait(lk, [&] { return gen_of(cursor_.load()) != seen; });
        sleepers_.fetch_sub(1);
      }
    }
    seen = g;
    if (stop_.load()) return;
    work_on(g);
  }
}

}  // namespace mamba::cpu

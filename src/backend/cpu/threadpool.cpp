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

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = int(std::max(1u, std::thread::hardware_concurrency()));
  n_threads_ = n_threads;
  for (int i = 1; i < n_threads_; i++) threads_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  { std::lock_guard<std::mutex> lk(mu_); }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  job_ = &fn;
  pending_.store(n_threads_ - 1);
  generation_.fetch_add(1);  // seq_cst: pairs with the sleepers_ check below
  if (sleepers_.load() > 0) {
    // Taking the mutex orders this notify after a worker that is going to sleep has
    // entered its wait, so the wake-up cannot be lost.
    { std::lock_guard<std::mutex> lk(mu_); }
    cv_.notify_all();
  }
  fn(0, n_threads_);
  for (int i = 0; pending_.load(std::memory_order_acquire) > 0; i++) {
    if (i < kSpinIterations)
      cpu_relax();
    else
      std::this_thread::yield();
  }
}

void ThreadPool::worker(int ith) {
  uint64_t seen = 0;
  for (;;) {
    int spins = 0;
    uint64_t g;
    while ((g = generation_.load(std::memory_order_acquire)) == seen) {
      if (++spins < kSpinIterations) {
        cpu_relax();
        continue;
      }
      if (spins < kSpinIterations + kYieldIterations) {
        std::this_thread::yield();
        continue;
      }
      std::unique_lock<std::mutex> lk(mu_);
      sleepers_.fetch_add(1);
      cv_.wait(lk, [&] { return generation_.load() != seen; });
      sleepers_.fetch_sub(1);
    }
    seen = g;
    if (stop_.load()) return;
    (*job_)(ith, n_threads_);
    pending_.fetch_sub(1, std::memory_order_release);
  }
}

void ThreadPool::for_range(int64_t n, int64_t grain,
                           const std::function<void(int64_t, int64_t)>& fn) {
  if (n < grain * n_threads_) {
    if (n > 0) fn(0, n);
    return;
  }
  run([&](int ith, int nth) {
    const Range r = split(n, ith, nth);
    if (r.begin < r.end) fn(r.begin, r.end);
  });
}

Range split(int64_t n, int ith, int nth, int64_t align) {
  const int64_t blocks = (n + align - 1) / align;
  const int64_t b0 = blocks * ith / nth, b1 = blocks * (ith + 1) / nth;
  return {std::min(n, b0 * align), std::min(n, b1 * align)};
}

}  // namespace mamba::cpu

// A small persistent thread pool for the CPU backend.
//
// parallel_for(n, grain, fn) cuts [0, n) into a few parts per thread and calls fn(begin, end)
// for each part on whichever thread claims it first; the calling thread works too, and the
// call returns when every part is done. Parts are claimed from a shared counter rather than
// assigned up front, so when the OS deschedules a worker (other programs competing for the
// cores) the remaining threads simply take its parts instead of waiting for it. Every kernel
// computes each output element the same way whichever part or thread it lands in, so results
// never depend on the thread count or on the timing.
//
// A forward pass makes a few hundred parallel_for calls per token, so idle workers spin for a
// short while before sleeping: waking a sleeping thread costs tens of microseconds.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace mamba::cpu {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // n_threads <= 0: one per hardware thread
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // fn(begin, end) over parts of [0, n) whose sizes are multiples of `grain` (except the
  // last). With n <= grain there is one part and the calling thread runs it alone: waking the
  // others would cost more than it saves (e.g. per-token work in a one-token decode step).
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  using Fn = std::function<void(int64_t, int64_t)>;
  void worker();
  // Claims and runs parts of job `gen` until none are left.
  void work_on(uint32_t gen);

  int n_threads_ = 1;
  std::vector<std::thread> threads_;
  // The current job. Written only while no part of the previous job can still be running.
  const Fn* fn_ = nullptr;
  int64_t n_ = 0, part_ = 0;
  // (job generation << 32) | (number of parts << 16) | next part to claim. One word, so a
  // thread that arrives late sees at once whether the job it woke for is still current.
  std::atomic<uint64_t> cursor_{0};
  std::atomic<int> parts_done_{0};
  uint32_t gen_ = 0;              // generation of the last job (caller side)
  std::atomic<int> sleepers_{0};  // workers blocked on cv_
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace mamba::cpu

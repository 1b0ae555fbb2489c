// A small persistent thread pool for the CPU backend.
//
// run(fn) calls fn(ith, nth) once on each of the nth threads (the calling thread is ith 0)
// and returns when all have finished: every op splits its own work by ith. A forward pass
// calls run() a few hundred times per token, so idle workers spin for a short while before
// sleeping; waking a sleeping thread costs tens of microseconds, a spinning one well under one.
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
  void run(const std::function<void(int ith, int nth)>& fn);
  // fn(begin, end) over parts of [0, n), one per thread; on the calling thread alone when
  // there are fewer than `grain` items per thread, where waking the others costs more than
  // it saves (e.g. per-token work in a one-token decode step).
  void for_range(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker(int ith);

  int n_threads_ = 1;
  std::vector<std::thread> threads_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};  // bumped once per run(); workers wait for a change
  std::atomic<int> pending_{0};          // workers still busy with the current job
  std::atomic<int> sleepers_{0};         // workers blocked on cv_
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
};

// The part [begin, end) of n items that thread ith of nth takes, in whole multiples of
// `align` items so that vector kernels see aligned blocks (the last part takes the rest).
struct Range {
  int64_t begin, end;
};
Range split(int64_t n, int ith, int nth, int64_t align = 1);

}  // namespace mamba::cpu

// cudaMemcpyAsync device-to-device timing for mamba-bench's roofline (see bandwidth.cuh).
#include "bandwidth.cuh"
#include "common.cuh"

namespace mamba {

namespace {

// The stream and events of one measurement, released on every path out (errors throw).
struct Timing {
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  Timing() {
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
  }
  ~Timing() {
    if (stop) cudaEventDestroy(stop);
    if (start) cudaEventDestroy(start);
    if (stream) cudaStreamDestroy(stream);
  }
  Timing(const Timing&) = delete;
  Timing& operator=(const Timing&) = delete;
};

// Puts the previous current device back when the measurement ends.
struct DeviceGuard {
  int previous = 0;
  explicit DeviceGuard(int device) {
    CUDA_CHECK(cudaGetDevice(&previous));
    CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(previous); }
};

}  // namespace

double cuda_copy_bandwidth(int device) {
  constexpr size_t kBytes = size_t(1) << 30;  // large enough to stream past the L2 (50-60 MB)
  constexpr int kCopies = 10;
  if (!cuda::device_available()) fail("no CUDA device is available");
  int n_devices = 0;
  CUDA_CHECK(cudaGetDeviceCount(&n_devices));
  if (device < 0 || device >= n_devices)
    fail("CUDA device ", device, " does not exist (", n_devices, " devices)");

  DeviceGuard guard(device);
  cuda::DeviceBuffer src(kBytes, "copy-bandwidth source buffer");
  cuda::DeviceBuffer dst(kBytes, "copy-bandwidth destination buffer");
  Timing t;
  CUDA_CHECK(cudaMemsetAsync(src.data(), 1, kBytes, t.stream));
  // Warm-up: the first copy pays for clocks ramping up and lazy driver work.
  CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), kBytes, cudaMemcpyDeviceToDevice, t.stream));
  CUDA_CHECK(cudaEventRecord(t.start, t.stream));
  for (int i = 0; i < kCopies; i++)
    CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), kBytes, cudaMemcpyDeviceToDevice, t.stream));
  CUDA_CHECK(cudaEventRecord(t.stop, t.stream));
  CUDA_CHECK(cudaEventSynchronize(t.stop));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, t.start, t.stop));
  if (!(ms > 0)) fail("copy-bandwidth timing returned ", double(ms), " ms");
  return 2.0 * double(kBytes) * kCopies / (double(ms) * 1e-3) / 1e9;
}

}  // namespace mamba

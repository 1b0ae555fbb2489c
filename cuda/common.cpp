#include "common.cuh"

#include <cstdio>

namespace mamba::cuda {

void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  (void)cudaGetLastError();  // clear a non-sticky error so the caller can go on
  fail("CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ") at ", file, ":",
       line, " in ", expr);
}

void throw_cublas_error(cublasStatus_t st, const char* expr, const char* file, int line) {
  fail("cuBLAS error ", cublasGetStatusName(st), " (", cublasGetStatusString(st), ") at ", file,
       ":", line, " in ", expr);
}

bool device_available() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return n > 0;
}

std::string format_bytes(uint64_t bytes) {
  char buf[64];
  if (bytes >= (uint64_t(1) << 30))
    std::snprintf(buf, sizeof buf, "%.1f GiB", double(bytes) / double(uint64_t(1) << 30));
  else if (bytes >= (uint64_t(1) << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / double(uint64_t(1) << 20));
  else if (bytes >= 1024)
    std::snprintf(buf, sizeof buf, "%.1f KiB", double(bytes) / 1024.0);
  else
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  return buf;
}

DeviceBuffer::DeviceBuffer(size_t bytes, const std::string& what) : bytes_(bytes) {
  if (bytes == 0) return;
  const cudaError_t err = cudaMalloc(&ptr_, bytes);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    ptr_ = nullptr;
    size_t free_b = 0, total_b = 0;
    std::string free_s = "unknown";
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess) free_s = format_bytes(free_b);
    (void)cudaGetLastError();
    fail("out of GPU memory allocating ", what, " (", format_bytes(bytes), "; ", free_s,
         " free)");
  }
  if (err != cudaSuccess) {
    ptr_ = nullptr;
    throw_cuda_error(err, ("cudaMalloc for " + what).c_str(), __FILE__, __LINE__);
  }
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);  // errors here cannot be reported; the context may be gone
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

HostBuffer::HostBuffer(size_t bytes, const std::string& what) : bytes_(bytes) {
  if (bytes == 0) return;
  const cudaError_t err = cudaMallocHost(&ptr_, bytes);
  if (err != cudaSuccess) {
    ptr_ = nullptr;
    bytes_ = 0;
    throw_cuda_error(err, ("cudaMallocHost for " + what).c_str(), __FILE__, __LINE__);
  }
}

HostBuffer::~HostBuffer() {
  if (ptr_) cudaFreeHost(ptr_);
}

HostBuffer& HostBuffer::operator=(HostBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) cudaFreeHost(ptr_);
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

}  // namespace mamba::cuda

#include "backend/backend.h"

#include "backend/cpu/cpu_backend.h"
#include "common/error.h"
#ifdef MAMBA_HAVE_CUDA
#include "cuda_backend.h"
#endif

namespace mamba {

std::unique_ptr<Backend> make_backend(const Model& model, const BackendOptions& opts) {
  if (opts.device == "cpu")
    return std::make_unique<cpu::CpuBackend>(model, opts.n_threads, opts.n_slots);
#ifdef MAMBA_HAVE_CUDA
  if (opts.device == "cuda" || opts.device.rfind("cuda:", 0) == 0)
    return make_cuda_backend(model, opts);
#else
  if (opts.device == "cuda" || opts.device.rfind("cuda:", 0) == 0)
    fail("the CUDA backend is not available in this build");
#endif
  fail("unknown device '", opts.device, "' (expected cpu or cuda)");
}

}  // namespace mamba

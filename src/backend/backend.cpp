#include "backend/backend.h"

#include "backend/cpu/cpu_backend.h"
#include "common/error.h"

namespace mamba {

std::unique_ptr<Backend> make_backend(const Model& model, const BackendOptions& opts) {
  if (opts.device == "cpu")
    return std::make_unique<cpu::CpuBackend>(model, opts.n_threads, opts.n_slots);
  if (opts.device == "cuda") fail("the CUDA backend is not available in this build");
  fail("unknown device '", opts.device, "' (expected cpu or cuda)");
}

}  // namespace mamba

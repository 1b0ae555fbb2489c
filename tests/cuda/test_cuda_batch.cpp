// mamba-batch as a process on the GPU: the cases test_batch.cpp runs on the CPU backend
// (batch_tool_cases.h), with --device cuda. Malformed lines give error records and the rest
// complete; 64 sequences decoded together give the same records as each alone (packed short
// prefills, the batched decode GEMM and the device's greedy picks against one-row steps); a
// job killed with SIGTERM, resumed, killed with SIGKILL and resumed again ends with one
// complete record per input id, each equal to an uninterrupted run's.
#include <doctest/doctest.h>

#include "../batch_tool_cases.h"
#include "cuda_test_util.h"

namespace {

const mamba::test::ToolEnv kCuda = {"cuda", std::filesystem::path(MAMBA_TEST_TMP) / "batch-cuda"};

}  // namespace

TEST_CASE("mamba-batch --device cuda: malformed lines give error records; --ordered") {
  if (cuda_test::no_device()) return;
  mamba::test::malformed_lines(kCuda);
}

TEST_CASE("mamba-batch --device cuda: 64 sequences in one batch vs each alone, byte-identical") {
  if (cuda_test::no_device()) return;
  mamba::test::invariance(kCuda);
}

TEST_CASE("mamba-batch --device cuda: SIGTERM, SIGKILL, a cut last line, --resume") {
  if (cuda_test::no_device()) return;
  mamba::test::kill_and_resume(kCuda);
}

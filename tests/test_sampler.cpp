// The token sampler: each stage against hand-computed cases, the whole chain's distribution.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "common/error.h"
#include "engine/sampler.h"

using namespace mamba;

TEST_CASE("greedy picks the largest logit, lowest id on ties") {
  Sampler s(SamplerParams{}, 5);
  const std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
  CHECK(s.sample(l) == 1);
}

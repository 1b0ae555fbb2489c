#include <doctest/doctest.h>

#include "common/error.h"
#include "model/config.h"

using namespace mamba;

TEST_CASE("config: Mamba-2 head and group arithmetic is validated") {
  ModelConfig c;
  c.arch = Arch::Mamba2;
  c.n_vocab = 32;
  c.d_model = 16;
  c.n_layer = 2;
  c.d_inner = 32;
  c.d_state = 8;
  c.n_heads = 4;
  c.head_dim = 8;
  c.n_groups = 2;
  CHECK_NOTHROW(c.validate());
  CHECK(c.conv_dim() == 32 + 2 * 2 * 8);
  CHECK(c.in_proj_rows() == 2 * 32 + 2 * 2 * 8 + 4);
  // conv state 2 layers x 3 x 64, ssm state 2 x 32 x 8, float32
  CHECK(c.state_bytes() == (2 * 3 * 64 + 2 * 32 * 8) * 4);
  c.n_groups = 3;
  CHECK_THROWS_AS(c.validate(), Error);
  c.n_groups = 2;
  c.head_dim = 7;
  CHECK_THROWS_AS(c.validate(), Error);
}

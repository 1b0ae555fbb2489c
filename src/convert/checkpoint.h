// The weights of a Hugging Face model directory: model.safetensors, or the shards that
// model.safetensors.index.json lists. All files stay memory-mapped; nothing is copied.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "convert/safetensors.h"

namespace mamba::convert {

struct Checkpoint {
  struct Entry {
    const safetensors::Tensor* tensor;
    std::string file;  // file name inside the directory, for messages
  };
  std::vector<std::unique_ptr<safetensors::File>> files;
  std::map<std::string, Entry> tensors;  // by the name stored in the file
};

// True when `dir` has model.safetensors or model.safetensors.index.json.
bool has_checkpoint(const std::string& dir);

// Opens the weights. Throws mamba::Error if there are none (naming the PyTorch .bin files
// when those are what the directory has, as they cannot be read without Python), if the
// index is malformed or names a shard outside the directory, or if a tensor appears twice.
std::unique_ptr<Checkpoint> open_checkpoint(const std::string& dir);

}  // namespace mamba::convert

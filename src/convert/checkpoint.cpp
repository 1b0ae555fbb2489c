#include "convert/checkpoint.h"

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "convert/files.h"

namespace mamba::convert {

using json = nlohmann::json;

namespace {

void add_file(Checkpoint& ck, std::unique_ptr<safetensors::File> file, const std::string& name) {
  for (const auto& t : file->tensors()) {
    auto [it, inserted] = ck.tensors.emplace(t.name, Checkpoint::Entry{&t, name});
    if (!inserted) fail("tensor '", t.name, "' appears in both ", it->second.file, " and ", name);
  }
  ck.files.push_back(std::move(file));
}

// A shard name from the index must be a plain file name in the model directory.
void check_shard_name(const std::string& index_path, const std::string& shard) {
  if (shard.empty() || shard == "." || shard == ".." || shard.find('/') != std::string::npos ||
      shard.find('\\') != std::string::npos || shard.find('\0') != std::string::npos)
    fail(index_path, ": shard name '", shard, "' is not a plain file name");
}

}  // namespace

bool has_checkpoint(const std::string& dir) {
  return is_regular_file(join_path(dir, "model.safetensors")) ||
         is_regular_file(join_path(dir, "model.safetensors.index.json"));
}

std::unique_ptr<Checkpoint> open_checkpoint(const std::string& dir) {
  auto ck = std::make_unique<Checkpoint>();
  const std::string single = join_path(dir, "model.safetensors");
  const std::string index_path = join_path(dir, "model.safetensors.index.json");

  if (is_directory(single)) fail(single, " is a directory, expected a safetensors file");
  if (is_regular_file(single)) {
    add_file(*ck, safetensors::File::open(single), "model.safetensors");
    return ck;
  }
  if (!is_regular_file(index_path)) {
    if (is_regular_file(join_path(dir, "pytorch_model.bin")) ||
        is_regular_file(join_path(dir, "pytorch_model.bin.index.json")))
      fail(dir,
           " has PyTorch .bin weights but no model.safetensors; only safetensors weights "
           "can be converted (save the model with safe_serialization)");
    fail(dir, " has no model.safetensors or model.safetensors.index.json");
  }

  json index;
  try {
    index = json::parse(read_whole_file(index_path, 64u << 20));
  } catch (const json::exception& e) {
    fail(index_path, ": not valid JSON (", e.what(), ")");
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    fail(index_path, ": no \"weight_map\" object");
  const json& map = index["weight_map"];

  // Open each shard once, in the order the index first names it.
  std::map<std::string, size_t> opened;
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (!it.value().is_string()) fail(index_path, ": weight_map['", it.key(), "'] is not a string");
    const std::string shard = it.value().get<std::string>();
    check_shard_name(index_path, shard);
    if (opened.count(shard)) continue;
    const std::string path = join_path(dir, shard);
    if (!is_regular_file(path))
      fail(index_path, " names shard ", shard, ", which is missing from ", dir);
    opened[shard] = ck->files.size();
    add_file(*ck, safetensors::File::open(path), shard);
  }
  for (auto it = map.begin(); it != map.end(); ++it) {
    auto found = ck->tensors.find(it.key());
    const std::string shard = it.value().get<std::string>();
    if (found == ck->tensors.end() || found->second.file != shard)
      fail(index_path, " maps tensor '", it.key(), "' to ", shard, ", which does not contain it");
  }
  if (ck->files.empty()) fail(index_path, ": the weight_map is empty");
  return ck;
}

}  // namespace mamba::convert

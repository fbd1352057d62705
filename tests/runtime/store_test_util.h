// Helpers for the store tests: a scratch directory, page blobs whose bytes are a pure
// function of a seed (so a parent process can check what a child wrote) with their real
// digests, and a look at the blob files on disk.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "kernels/page_kernels.h"
#include "runtime/page_digest.h"
#include "runtime/store.h"
#include "tests/support/pattern.h"

namespace pf::rt::testing {

// A fresh directory under TMPDIR (or /tmp), removed with everything in it on destruction.
class ScratchDir {
 public:
  ScratchDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/pf_store_XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
    path_ = templ;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A page blob: page_bytes of pattern(seed) (every slot, also those past fill: the store
// must not keep them) and its key over the first `fill` slots.
struct TestBlob {
  std::vector<std::byte> bytes;
  BlobKey key;
  // What a read gives back: bytes with the slots past fill zeroed.
  std::vector<std::byte> expected(const Geometry& g) const {
    std::vector<std::byte> out = bytes;
    const std::size_t tail = std::size_t{g.page_tokens - key.fill} * g.token_bytes();
    for (std::uint32_t l = 0; l < g.layers; ++l) {
      for (Half h : {Half::kK, Half::kV})
        std::memset(out.data() + g.offset(l, h, key.fill), 0, tail);
    }
    return out;
  }
};

inline TestBlob make_blob(kernels::PageKernels& kernels, const Geometry& g, std::uint64_t seed,
                          std::uint32_t fill) {
  TestBlob b;
  const auto p = pf::testing::pattern(g.page_bytes(), seed);
  b.bytes.resize(p.size());
  std::memcpy(b.bytes.data(), p.data(), p.size());
  const PageId page = 0;
  PageDigest d;
  const Status s = digest_pages(kernels, g, b.bytes.data(), {&page, 1}, {&fill, 1}, {&d, 1});
  EXPECT_TRUE(s.is_ok()) << s.to_string();
  b.key = {d.k, d.v, fill};
  return b;
}

// Every file under DIR/blobs (fan-out directories' entries), by name.
inline std::vector<std::string> blob_files(const std::string& store_dir) {
  std::vector<std::string> out;
  for (const auto& fan : std::filesystem::directory_iterator(store_dir + "/blobs")) {
    for (const auto& f : std::filesystem::directory_iterator(fan.path())) {
      out.push_back(f.path().filename().string());
    }
  }
  return out;
}

inline std::string blob_path(const std::string& store_dir, const BlobKey& key) {
  const std::string name = key.hex();
  return store_dir + "/blobs/" + name.substr(0, 2) + "/" + name;
}

}  // namespace pf::rt::testing

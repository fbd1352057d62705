// BLAKE3 (host): the published test vectors, an independent reference implementation (the
// PyPI `blake3` package, Rust-backed), and the chunk / parent / tree pieces the CUDA kernels
// mirror.
#include "kernels/blake3.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kernels/blake3_core.h"
#include "kernels/page_kernels.h"
#include "tests/support/pattern.h"

#ifndef PF_PYTHON
#define PF_PYTHON "python3"
#endif

namespace pf::kernels {
namespace {

// The official BLAKE3 test vectors (BLAKE3-team/BLAKE3, test_vectors/test_vectors.json):
// input byte i is i % 251; "hash" truncated to the default 32-byte output.
struct Vector {
  std::size_t len;
  const char* hash;
};
constexpr Vector kVectors[] = {
    {0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"},
    {1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"},
    {1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11"},
    {1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"},
    {1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"},
    {2048, "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a"},
    {2049, "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030"},
    {3072, "b98cb0ff3623be03326b373de6b9095218513e64f1ee2edd2525c7ad1e5cffd2"},
    {3073, "7124b49501012f81cc7f11ca069ec9226cecb8a2c850cfe644e327d22d3e1cd3"},
    {4096, "015094013f57a5277b59d8475c0501042c0b642e531b0a1c8f58d2163229e969"},
    {4097, "9b4052b38f1c5fc8b1f9ff7ac7b27cd242487b3d890d15c96a1c25b8aa0fb995"},
    {5120, "9cadc15fed8b5d854562b26a9536d9707cadeda9b143978f319ab34230535833"},
    {5121, "628bd2cb2004694adaab7bbd778a25df25c47b9d4155a55f8fbd79f2fe154cff"},
    {6144, "3e2e5b74e048f3add6d21faab3f83aa44d3b2278afb83b80b3c35164ebeca205"},
    {6145, "f1323a8631446cc50536a9f705ee5cb619424d46887f3c376c695b70e0f0507f"},
    {7168, "61da957ec2499a95d6b8023e2b0e604ec7f6b50e80a9678b89d2628e99ada77a"},
    {7169, "a003fc7a51754a9b3c7fae0367ab3d782dccf28855a03d435f8cfe74605e7817"},
    {8192, "aae792484c8efe4f19e2ca7d371d8c467ffb10748d8a5a1ae579948f718a2a63"},
    {8193, "bab6c09cb8ce8cf459261398d2e7aef35700bf488116ceb94a36d0f5f1b7bc3b"},
    {16384, "f875d6646de28985646f34ee13be9a576fd515f76b5b0a26bb324735041ddde4"},
    {31744, "62b6960e1a44bcc1eb1a611a8d6235b6b4b78f32e7abc4fb4c6cdcce94895c47"},
    {102400, "bc3e3d41a1146b069abffad3c0d44860cf664390afce4d9661f7902e7943e085"},
};

std::vector<std::uint8_t> mod251(std::size_t len) {
  std::vector<std::uint8_t> v(len);
  for (std::size_t i = 0; i < len; ++i) v[i] = static_cast<std::uint8_t>(i % 251);
  return v;
}

Digest digest_of_cv(const std::uint32_t cv[8]) {
  Digest d;
  b3::cv_to_bytes(cv, d.bytes.data());
  return d;
}

TEST(Blake3, PublishedTestVectors) {
  const std::vector<std::uint8_t> input = mod251(102400);
  for (const Vector& v : kVectors) {
    EXPECT_EQ(blake3_digest(input.data(), v.len).hex(), v.hash) << "input_len " << v.len;
  }
}

TEST(Blake3, EmptyInputAcceptsNullPointer) {
  EXPECT_EQ(blake3_digest(nullptr, 0).hex(), kVectors[0].hash);
}

TEST(Blake3, DigestHexIsLowercaseBytesInOrder) {
  Digest d;
  for (std::size_t i = 0; i < d.bytes.size(); ++i) d.bytes[i] = static_cast<std::uint8_t>(i * 17);
  EXPECT_EQ(d.hex(), "00112233445566778899aabbccddeeff102132435465768798a9bacbdcedfe0f");
}

TEST(Blake3, SingleChunkIsRootChunk) {
  const std::vector<std::uint8_t> input = mod251(1024);
  for (std::size_t len : {0, 1, 63, 64, 65, 1000, 1024}) {
    std::uint32_t cv[8];
    b3::chunk_cv(input.data(), len, 0, /*root=*/true, cv);
    EXPECT_EQ(digest_of_cv(cv), blake3_digest(input.data(), len)) << "len " << len;
  }
}

TEST(Blake3, ThreeChunksByHand) {
  // 2049 bytes: chunks 0 and 1 full, chunk 2 one byte; the tree is parent(parent(0, 1), 2).
  const std::vector<std::uint8_t> input = mod251(2049);
  std::uint32_t c0[8], c1[8], c2[8], p01[8], root[8];
  b3::chunk_cv(input.data(), 1024, 0, false, c0);
  b3::chunk_cv(input.data() + 1024, 1024, 1, false, c1);
  b3::chunk_cv(input.data() + 2048, 1, 2, false, c2);
  b3::parent_cv(c0, c1, 0, p01);
  b3::parent_cv(p01, c2, b3::kRoot, root);
  EXPECT_EQ(digest_of_cv(root).hex(),
            "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030");
}

// The SIMD lanes (any width the CPU has) agree with the scalar chunk function, including
// counters above 2^32 (the high counter word differs per lane).
TEST(Blake3, FullChunkLanesMatchScalar) {
  const std::vector<std::uint8_t> input = testing::pattern(33 * 1024, 7);
  for (std::uint64_t first : {std::uint64_t{0}, std::uint64_t{5}, (std::uint64_t{1} << 32) - 3}) {
    for (std::size_t n : {1, 3, 4, 5, 8, 9, 16, 17, 33}) {
      std::uint32_t lanes[33][8];
      b3::full_chunk_cvs(input.data(), n, first, lanes);
      for (std::size_t i = 0; i < n; ++i) {
        std::uint32_t scalar[8];
        b3::chunk_cv(input.data() + i * 1024, 1024, first + i, false, scalar);
        for (int w = 0; w < 8; ++w) {
          ASSERT_EQ(lanes[i][w], scalar[w]) << "path " << b3::simd_path() << " first " << first
                                            << " n " << n << " chunk " << i << " word " << w;
        }
      }
    }
  }
}

// Parent nodes in SIMD lanes agree with the scalar parent function, also reduced in place
// (out == in), for counts that leave a partial batch of lanes.
TEST(Blake3, ParentLanesMatchScalarAlsoInPlace) {
  const std::vector<std::uint8_t> input = testing::pattern(66 * 32, 3);
  std::uint32_t cvs[66][8];
  std::memcpy(cvs, input.data(), sizeof(cvs));
  for (std::size_t n : {1, 3, 4, 5, 8, 9, 16, 17, 33}) {
    std::uint32_t expected[33][8];
    for (std::size_t i = 0; i < n; ++i) b3::parent_cv(cvs[2 * i], cvs[2 * i + 1], 0, expected[i]);
    std::uint32_t apart[33][8];
    b3::parent_cvs(cvs, n, apart);
    std::uint32_t in_place[66][8];
    std::memcpy(in_place, cvs, sizeof(cvs));
    b3::parent_cvs(in_place, n, in_place);
    for (std::size_t i = 0; i < n; ++i) {
      for (int w = 0; w < 8; ++w) {
        ASSERT_EQ(apart[i][w], expected[i][w])
            << "path " << b3::simd_path() << " n " << n << " parent " << i << " word " << w;
        ASSERT_EQ(in_place[i][w], expected[i][w]) << "in place, n " << n << " parent " << i;
      }
    }
  }
}

// The CUDA kernels reduce chunk values level by level (pairs, odd last node carried up,
// ROOT on the last pair). The same reduction on the host must give blake3_digest().
TEST(Blake3, LevelByLevelReductionEqualsTreeHash) {
  const std::vector<std::uint8_t> input = testing::pattern((2u << 20) + 1, 11);
  std::vector<std::size_t> lengths;
  for (std::size_t chunks = 2; chunks <= 70; ++chunks) lengths.push_back(chunks * 1024 - 100);
  lengths.push_back(2u << 20);
  lengths.push_back((2u << 20) + 1);
  for (std::size_t len : lengths) {
    const std::size_t n = (len + 1023) / 1024;
    std::vector<std::array<std::uint32_t, 8>> level(n);
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t chunk_len = std::min<std::size_t>(1024, len - i * 1024);
      b3::chunk_cv(input.data() + i * 1024, chunk_len, i, false, level[i].data());
    }
    while (level.size() > 2) {
      std::vector<std::array<std::uint32_t, 8>> next((level.size() + 1) / 2);
      for (std::size_t i = 0; i < next.size(); ++i) {
        if (2 * i + 1 < level.size()) {
          b3::parent_cv(level[2 * i].data(), level[2 * i + 1].data(), 0, next[i].data());
        } else {
          next[i] = level[2 * i];
        }
      }
      level.swap(next);
    }
    std::uint32_t root[8];
    b3::parent_cv(level[0].data(), level[1].data(), b3::kRoot, root);
    EXPECT_EQ(digest_of_cv(root), blake3_digest(input.data(), len)) << "len " << len;
  }
}

TEST(Blake3, DifferentInputsDiffer) {
  std::vector<std::uint8_t> a = testing::pattern(4096, 3);
  const Digest before = blake3_digest(a.data(), a.size());
  a[4095] ^= 1;
  EXPECT_NE(blake3_digest(a.data(), a.size()), before);
  EXPECT_NE(blake3_digest(a.data(), a.size() - 1), blake3_digest(a.data(), a.size()));
}

// ---- Independent reference: the PyPI `blake3` package --------------------------------

bool python_blake3_available() {
  const std::string cmd = std::string(PF_PYTHON) + " -c \"import blake3\" >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

TEST(Blake3, MatchesPythonReference) {
  if (!python_blake3_available()) GTEST_SKIP() << "python3 blake3 module not installed";
  const std::vector<std::size_t> lengths = {0,
                                            1,
                                            2,
                                            63,
                                            64,
                                            65,
                                            127,
                                            128,
                                            1000,
                                            1023,
                                            1024,
                                            1025,
                                            2047,
                                            2048,
                                            2049,
                                            3073,
                                            4095,
                                            4096,
                                            4097,
                                            8191,
                                            16385,
                                            65543,
                                            100000,
                                            1u << 20,
                                            (2u << 20) - 1,
                                            2u << 20,
                                            (2u << 20) + 1,
                                            (3u << 20) + 12345};
  char dir_template[] = "/tmp/pf_blake3_ref_XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const std::filesystem::path dir(dir_template);
  std::vector<Digest> ours;
  {
    std::ofstream list(dir / "inputs.txt");
    for (std::size_t i = 0; i < lengths.size(); ++i) {
      const std::vector<std::uint8_t> data = testing::pattern(lengths[i], 1000 + i);
      ours.push_back(blake3_digest(data.data(), data.size()));
      const std::filesystem::path file = dir / ("in" + std::to_string(i));
      std::ofstream(file, std::ios::binary)
          .write(reinterpret_cast<const char*>(data.data()),
                 static_cast<std::streamsize>(data.size()));
      list << file.string() << "\n";
    }
  }
  const std::string script =
      "import blake3,sys\n"
      "for p in open(sys.argv[1]).read().split():\n"
      "    print(blake3.blake3(open(p,'rb').read()).hexdigest())\n";
  std::ofstream(dir / "ref.py") << script;
  const std::string cmd = std::string(PF_PYTHON) + " " + (dir / "ref.py").string() + " " +
                          (dir / "inputs.txt").string();
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::vector<std::string> theirs;
  char line[128];
  while (std::fgets(line, sizeof(line), pipe) != nullptr) {
    std::string s(line);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    theirs.push_back(s);
  }
  const int rc = pclose(pipe);
  std::filesystem::remove_all(dir);
  ASSERT_EQ(rc, 0) << cmd;
  ASSERT_EQ(theirs.size(), lengths.size());
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    EXPECT_EQ(ours[i].hex(), theirs[i]) << "length " << lengths[i];
  }
}

}  // namespace
}  // namespace pf::kernels

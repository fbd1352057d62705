// Formats against independent references: canonical manifest JSON (vs nlohmann's own
// sorted dump), CIDs (vs Python hashlib), K/V page digests (vs the PyPI blake3 package over
// bytes read back from the pool), prefix keys (vs SGLang HiCache's get_hash_str, written
// out in Python with hashlib). Python checks skip visibly when PF_PYTHON lacks a module.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/manifest.h"
#include "runtime/prefix_index.h"
#include "tests/runtime/runtime_test_util.h"
#include "vmm/host_backend.h"

namespace pf::rt::testing {
namespace {

Manifest sample_manifest() {
  Manifest m;
  m.geometry = *geometry_preset("tiny");
  m.name = "q\"uote\\ \n tab\t ünïcode \x01";
  m.parents = {"sha256:" + std::string(64, 'a'), "sha256:" + std::string(64, 'b')};
  m.tokens = {1, 2, 3, 4, 4294967295u};
  m.pages = {{std::string(64, '1'), std::string(64, '2')},
             {std::string(64, '3'), std::string(64, '4')}};
  m.logical_seqs = {{0, {0, 1}, 1}};
  return m;
}

TEST(RuntimeFormats, CanonicalJsonIsSortedCompactAndRoundTrips) {
  const Manifest m = sample_manifest();
  auto bytes = canonical_json(m);
  ASSERT_TRUE(bytes.is_ok());
  // nlohmann's default object is a std::map: its compact dump is the canonical form.
  EXPECT_EQ(nlohmann::json::parse(*bytes).dump(), *bytes);
  EXPECT_EQ(bytes->find(' ', bytes->find("\"page_size_tokens\"")), std::string::npos);
  auto pm = parse_manifest(*bytes);
  ASSERT_TRUE(pm.is_ok()) << pm.status().to_string();
  EXPECT_EQ(pm->manifest, m);
  EXPECT_EQ(pm->cid, cid_of(*bytes));
  EXPECT_TRUE(is_cid(pm->cid));
}

TEST(RuntimeFormats, ParseRejectsNonCanonicalAndMalformedManifests) {
  const std::string good = *canonical_json(sample_manifest());
  auto rejects = [](const std::string& s) {
    return parse_manifest(s).status().code() == Code::kInvalidArgument;
  };
  auto j = nlohmann::json::parse(good);
  EXPECT_TRUE(rejects(j.dump(1)));  // whitespace
  EXPECT_TRUE(rejects("{not json"));
  EXPECT_TRUE(rejects("[]"));
  auto mutate = [&](auto fn) {
    auto c = j;
    fn(c);
    return c.dump();
  };
  EXPECT_TRUE(rejects(mutate([](auto& c) { c["head_dim"] = 8.5; })));
  EXPECT_TRUE(rejects(mutate([](auto& c) { c["n_layers"] = -2; })));
  EXPECT_TRUE(rejects(mutate([](auto& c) { c.erase("tokens"); })));
  EXPECT_TRUE(rejects(mutate([](auto& c) { c["extra"] = 1; })));
  EXPECT_TRUE(rejects(mutate([](auto& c) { c["pages"][0]["k"] = "XYZ"; })));
  EXPECT_TRUE(rejects(mutate([](auto& c) { c["parents"][0] = "md5:00"; })));
  EXPECT_TRUE(rejects(mutate([](auto& c) { c["tokens"].push_back(5); })));
  EXPECT_TRUE(rejects(mutate([](auto& c) { c["logical_seqs"][0]["page_ixs"][0] = 7; })));
  EXPECT_TRUE(rejects(mutate([](auto& c) { c["dtype"] = "int4"; })));
  EXPECT_TRUE(rejects(mutate([](auto& c) { c["format_version"] = 2; })));
  EXPECT_TRUE(rejects(mutate([](auto& c) { c["page_size_tokens"] = 0; })));
  // Key order matters: a hand-written unsorted object is not canonical.
  std::string unsorted = good;
  unsorted.replace(1, 0, "\"zz\":0,");
  EXPECT_TRUE(rejects(unsorted));
}

TEST(RuntimeFormats, CidAndPageDigestsMatchIndependentPython) {
  Fixture f = make_runtime("host", *geometry_preset("tiny"), std::size_t{4} << 20);
  ASSERT_TRUE(f.rt);
  Runtime& rt = *f.rt;
  const auto t = iota_tokens(10);  // 3 pages, 2 tokens in the last
  auto b = rt.create_branch();
  append_and_write(rt, b->id, t, t);
  auto snap = rt.snapshot(b->id, "py");
  ASSERT_TRUE(snap.is_ok());
  const std::string bytes = *rt.manifest(snap->cid);
  auto pm = parse_manifest(bytes);
  ASSERT_TRUE(pm.is_ok());
  const auto view = *rt.branch_view(b->id);
  const Geometry& g = rt.geometry();
  // Hand Python the manifest and the raw page bytes; it recomputes the CID with hashlib and
  // every K/V digest with the blake3 package, by the definition in docs/formats.md.
  std::ostringstream py;
  py << "import hashlib, json, sys\nimport blake3\n";
  py << "m = bytes.fromhex('";
  for (unsigned char c : bytes) py << std::hex << (c >> 4) << (c & 15);
  py << "')\nprint('sha256:' + hashlib.sha256(m).hexdigest())\n";
  py << std::dec << "L=" << g.layers << "; TB=" << g.token_bytes() << "; BB=" << g.block_bytes()
     << "\npages = [";
  for (PageId p : view.pages) {
    py << "bytes.fromhex('";
    for (unsigned char c : read_page(rt, p)) py << std::hex << (c >> 4) << (c & 15);
    py << "'),";
  }
  py << std::dec << "]\nfills = [" << g.page_tokens << ", " << g.page_tokens << ", "
     << view.fill_in_last_page << "]\n";
  py << R"(for page, fill in zip(pages, fills):
    out = []
    for half in (0, 1):
        cat = b''
        for l in range(L):
            off = (l * 2 + half) * BB
            cat += blake3.blake3(page[off:off + fill * TB]).digest()
        out.append(blake3.blake3(cat).hexdigest())
    print(out[0], out[1])
)";
  auto out = run_python(py.str());
  if (!out) GTEST_SKIP() << "PF_PYTHON (" << PF_PYTHON << ") lacks hashlib/blake3";
  std::istringstream lines(*out);
  std::string cid;
  lines >> cid;
  EXPECT_EQ(cid, snap->cid);
  for (std::size_t i = 0; i < view.pages.size(); ++i) {
    std::string k, v;
    lines >> k >> v;
    EXPECT_EQ(k, pm->manifest.pages[i].k) << "page " << i;
    EXPECT_EQ(v, pm->manifest.pages[i].v) << "page " << i;
  }
}

TEST(RuntimeFormats, PrefixKeysEqualSglangHiCacheHashes) {
  std::vector<Token> tokens;
  for (std::uint32_t i = 0; i < 70; ++i) tokens.push_back(i * 2654435761u);  // full 32-bit range
  const auto ours = prefix_page_keys(tokens, 16);
  ASSERT_EQ(ours.size(), 4u);
  std::ostringstream py;
  // SGLang's HiCache page hash (mem_cache/hicache_storage.py get_hash_str), verbatim logic.
  py << R"(import hashlib
def get_hash_str(token_ids, prior_hash=None):
    hasher = hashlib.sha256()
    if prior_hash:
        hasher.update(bytes.fromhex(prior_hash))
    for t in token_ids:
        hasher.update(t.to_bytes(4, byteorder="little", signed=False))
    return hasher.hexdigest()
tokens = [)";
  for (Token t : tokens) py << t << ",";
  py << R"(]
prior = None
for i in range(0, len(tokens) - 16 + 1, 16):
    prior = get_hash_str(tokens[i:i + 16], prior)
    print(prior)
)";
  auto out = run_python(py.str());
  if (!out) GTEST_SKIP() << "PF_PYTHON (" << PF_PYTHON << ") unavailable";
  std::istringstream lines(*out);
  for (const std::string& k : ours) {
    std::string theirs;
    lines >> theirs;
    EXPECT_EQ(k, theirs);
  }
}

TEST(RuntimeFormats, GeometryPresetsParseAndOffsets) {
  auto l8 = geometry_preset("llama-3-8b");
  ASSERT_TRUE(l8.is_ok());
  EXPECT_EQ(l8->page_bytes(), std::size_t{2} << 20);
  auto l70 = geometry_preset("llama-3-70b-tp8");
  ASSERT_TRUE(l70.is_ok());
  EXPECT_EQ(l70->page_bytes(), 80u * 2 * 16 * 128 * 2);
  EXPECT_EQ(geometry_preset("tiny")->page_bytes(), 512u);
  EXPECT_EQ(geometry_preset("gpt-9").status().code(), Code::kNotFound);
  auto parsed = parse_geometry(l8->to_string());
  ASSERT_TRUE(parsed.is_ok());
  EXPECT_EQ(*parsed, *l8);
  EXPECT_EQ(*parse_geometry("llama-3-8b"), *l8);
  auto custom = parse_geometry("page_tokens=8,dtype=fp8_e4m3,head_dim=64,kv_heads=2,layers=3");
  ASSERT_TRUE(custom.is_ok());
  EXPECT_EQ(custom->page_bytes(), 3u * 2 * 8 * 2 * 64);
  for (const char* bad :
       {"layers=1", "layers=0,kv_heads=1,head_dim=1,dtype=bf16,page_tokens=1",
        "layers=1,kv_heads=1,head_dim=1,dtype=bf17,page_tokens=1",
        "layers=x,kv_heads=1,head_dim=1,dtype=bf16,page_tokens=1",
        "layers=1,layers=1,kv_heads=1,head_dim=1,dtype=bf16,page_tokens=1",
        "layers=1,kv_heads=1,head_dim=1,dtype=bf16,page_tokens=1,foo=2", "nonsense"}) {
    EXPECT_EQ(parse_geometry(bad).status().code(), Code::kInvalidArgument) << bad;
  }
  // A preset with another page size (an engine's block size): "NAME:PAGE_TOKENS".
  for (std::uint32_t pt : {1u, 32u, 128u, 65536u}) {
    auto sized = parse_geometry("llama-3-8b:" + std::to_string(pt));
    ASSERT_TRUE(sized.is_ok()) << pt << ": " << sized.status().to_string();
    EXPECT_EQ(*sized, (Geometry{32, 8, 128, DType::kBF16, pt}));
    EXPECT_EQ(sized->page_bytes(), std::size_t{128 << 10} * pt);
    EXPECT_EQ(*parse_geometry(sized->to_string()), *sized);
  }
  EXPECT_EQ(parse_geometry("llama-3-70b-tp8:128")->page_bytes(), 80u * 2 * 128 * 128 * 2);
  EXPECT_EQ(*parse_geometry("tiny:4"), *geometry_preset("tiny"));
  for (const char* bad :
       {"llama-3-8b:", "llama-3-8b:0", "llama-3-8b:65537", "llama-3-8b:x", "llama-3-8b:16:16",
        "llama-3-8b:-16", "llama-3-8b: 16", "gpt-9:16", ":16"}) {
    EXPECT_EQ(parse_geometry(bad).status().code(), Code::kInvalidArgument) << bad;
  }
  // [layer][K|V][token][kv_head][head_dim]
  const Geometry g = *l8;
  EXPECT_EQ(g.offset(0, Half::kK, 0), 0u);
  EXPECT_EQ(g.offset(0, Half::kK, 1), 8u * 128 * 2);
  EXPECT_EQ(g.offset(0, Half::kV, 0), 16u * 8 * 128 * 2);
  EXPECT_EQ(g.offset(31, Half::kV, 15) + g.token_bytes(), g.page_bytes());
}

TEST(RuntimeFormats, PoolGrowsByChunksWithStraddlingPagesAndTrims) {
  auto be = vmm::make_host_backend();
  const Geometry g = *geometry_preset("llama-3-70b-tp8");  // 640 KiB pages over 2 MiB chunks
  auto pool = PagePool::create(*be, g, {.capacity_bytes = 8u << 20, .chunk_bytes = 2u << 20});
  ASSERT_TRUE(pool.is_ok()) << pool.status().to_string();
  PagePool& p = **pool;
  EXPECT_EQ(p.capacity_pages(), (8u << 20) / g.page_bytes());
  EXPECT_EQ(p.mapped_pages(), 0u);
  ASSERT_TRUE(p.grow_for(4).is_ok());
  EXPECT_EQ(p.range().chunk_count(), 2u);  // 4 MiB holds 6 whole pages
  EXPECT_EQ(p.mapped_pages(), 6u);
  auto got = p.allocate(4);
  ASSERT_TRUE(got.is_ok());
  EXPECT_EQ(*got, (std::vector<PageId>{0, 1, 2, 3}));
  // Page 3 straddles the first chunk boundary: its bytes must survive as one range.
  const auto bytes = pattern(g.page_bytes(), 77);
  ASSERT_TRUE(be->copy_to_mapped(p.page_ptr(3), bytes.data(), bytes.size()).is_ok());
  std::vector<std::uint8_t> back(bytes.size());
  ASSERT_TRUE(be->copy_from_mapped(back.data(), p.page_ptr(3), back.size()).is_ok());
  EXPECT_EQ(back, bytes);
  EXPECT_EQ(p.allocate(3).status().code(), Code::kOutOfMemory);  // 2 free, never grows
  EXPECT_EQ(p.free_mapped_pages(), 2u);
  EXPECT_EQ(p.grow_for(100).code(), Code::kOutOfMemory);
  EXPECT_EQ(p.range().chunk_count(), 2u);
  // Trim keeps chunks that hold a used page.
  p.unref(0);
  p.unref(1);
  p.unref(2);
  EXPECT_EQ(p.trim(), 0u);  // page 3 overlaps chunk 1
  p.ref(3);
  p.unref(3);
  p.unref(3);
  EXPECT_EQ(p.trim(), 2u);
  EXPECT_EQ(p.mapped_pages(), 0u);
  EXPECT_TRUE(p.integrity_error().empty());
}

TEST(RuntimeFormats, EpochAndChunkSerialsTrackEveryChangeOfTheChunkSet) {
  auto be = vmm::make_host_backend();
  auto pool = PagePool::create(*be, *geometry_preset("llama-3-8b"),
                               {.capacity_bytes = 8u << 20, .chunk_bytes = 2u << 20});
  ASSERT_TRUE(pool.is_ok());
  PagePool& p = **pool;
  const std::uint64_t e0 = p.epoch();
  ASSERT_TRUE(p.grow_for(2).is_ok());
  const std::uint64_t e1 = p.epoch();
  EXPECT_NE(e1, e0);
  ASSERT_EQ(p.chunk_serials().size(), 2u);
  const auto first = p.chunk_serials();
  EXPECT_NE(first[0], first[1]);
  ASSERT_TRUE(p.grow_for(0).is_ok());
  EXPECT_EQ(p.epoch(), e1) << "no chunk change, no new epoch";
  EXPECT_EQ(p.trim(), 2u);
  EXPECT_NE(p.epoch(), e1);
  EXPECT_TRUE(p.chunk_serials().empty());
  ASSERT_TRUE(p.grow_for(1).is_ok());
  ASSERT_EQ(p.chunk_serials().size(), 1u);
  EXPECT_NE(p.chunk_serials()[0], first[0]) << "a new chunk at a reused index is a new serial";

  // A failed growth changes neither the epoch nor the serials.
  const std::uint64_t before = p.epoch();
  EXPECT_EQ(p.grow_for(100).code(), Code::kOutOfMemory);
  EXPECT_EQ(p.epoch(), before);
  EXPECT_EQ(p.chunk_serials().size(), 1u);
}

TEST(RuntimeFormats, RuntimeExportsChunksThatAnotherMappingSeesIdentically) {
  auto be = vmm::make_host_backend();
  RuntimeOptions o;
  o.geometry = *geometry_preset("tiny");
  o.pool = {.capacity_bytes = 8u << 20, .chunk_bytes = 2u << 20};
  auto rt = Runtime::create(*be, o);
  ASSERT_TRUE(rt.is_ok()) << rt.status().to_string();
  Runtime& r = **rt;
  auto b = r.create_branch();
  ASSERT_TRUE(b.is_ok());
  const std::vector<Token> tokens = {1, 2, 3, 4, 5};
  auto app = r.append(b->id, tokens);
  ASSERT_TRUE(app.is_ok());
  const PoolLayout layout = r.pool_layout();
  ASSERT_EQ(layout.chunk_serials.size(), 1u);
  EXPECT_EQ(layout.chunk_bytes, 2u << 20);
  EXPECT_GE(layout.capacity_bytes, 8u << 20);
  EXPECT_EQ(layout.page_bytes, r.page_bytes());

  std::uint64_t serial = 0;
  auto fd = r.export_chunk(0, &serial);
  ASSERT_TRUE(fd.is_ok()) << fd.status().to_string();
  EXPECT_EQ(serial, layout.chunk_serials[0]);
  EXPECT_EQ(r.export_chunk(1).status().code(), Code::kInvalidArgument);

  // Another mapping of the exported chunk sees what was written through the runtime's.
  auto other = vmm::MappedRange::create(*be, layout.chunk_bytes);
  ASSERT_TRUE(other.is_ok());
  ASSERT_TRUE(other.value()->grow_imported(fd.value().get(), layout.chunk_bytes).is_ok());
  const PageId page = app->runs[0].page;
  const auto bytes = pattern(r.page_bytes(), 5);
  ASSERT_TRUE(
      be->copy_to_mapped(r.base() + page * r.page_bytes(), bytes.data(), bytes.size()).is_ok());
  EXPECT_EQ(std::memcmp(static_cast<std::byte*>(other.value()->base()) + page * r.page_bytes(),
                        bytes.data(), bytes.size()),
            0);
}

#ifdef NDEBUG
TEST(RuntimeFormats, RefcountUnderflowIsRecordedNeverClamped) {
  auto be = vmm::make_host_backend();
  auto pool = PagePool::create(*be, *geometry_preset("tiny"), {.capacity_bytes = 2u << 20});
  ASSERT_TRUE(pool.is_ok());
  ASSERT_TRUE((*pool)->grow_for(1).is_ok());
  auto got = (*pool)->allocate(1);
  (*pool)->unref((*got)[0]);
  (*pool)->unref((*got)[0]);  // a bug: must be recorded
  EXPECT_NE((*pool)->integrity_error().find("underflow"), std::string::npos);
}
#endif

}  // namespace
}  // namespace pf::rt::testing

// Snapshot manifests and CIDs (DESIGN §4; byte-exact definition in docs/formats.md).
//
// A manifest carries the paged-batchinvariant-v1 page-manifest fields (layout,
// page_size_tokens, n_layers, n_heads = KV heads, head_dim, dtype, pages [{ix, k, v}],
// logical_seqs [{id, page_ixs, fill_in_last_page}]) plus tokens, parents, name and
// format_version, and `namespace` (64 lowercase hex digits) only when the snapshot is not in
// the default namespace, so default-namespace CIDs are those of before namespaces. Its canonical
// form is JSON with sorted keys, no whitespace and integers only (digests and CIDs are lowercase
// hex strings); the CID is "sha256:" + hex(SHA-256(canonical bytes)). Manifests name no pool page
// ids: identical content gives the identical CID in any runtime.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/page_format.h"
#include "runtime/namespace.h"
#include "runtime/types.h"

namespace pf::rt {

inline constexpr std::uint32_t kManifestFormatVersion = 1;
inline constexpr std::string_view kManifestLayout = "paged-batchinvariant-v1";
inline constexpr std::size_t kMaxNameBytes = 256;

struct ManifestPage {
  std::string k;  // 64 lowercase hex chars
  std::string v;
  bool operator==(const ManifestPage&) const = default;
};

struct LogicalSeq {
  std::uint64_t id = 0;
  std::vector<std::uint64_t> page_ixs;  // indices into Manifest::pages
  std::uint32_t fill_in_last_page = 0;  // tokens in the last page; 0 only with no pages
  bool operator==(const LogicalSeq&) const = default;
};

struct Manifest {
  std::uint32_t format_version = kManifestFormatVersion;
  std::string layout = std::string(kManifestLayout);
  Geometry geometry;
  std::string name;
  std::vector<std::string> parents;  // CIDs, in order (a merge lists into, then from)
  std::vector<Token> tokens;         // the tokens of logical_seqs[0]
  std::vector<ManifestPage> pages;
  std::vector<LogicalSeq> logical_seqs;
  Namespace ns{};  // the prefix-index namespace of its pages; zero (default): not written
  bool operator==(const Manifest&) const = default;
};

// The canonical bytes. kInvalidArgument when `name` is not valid UTF-8.
Result<std::string> canonical_json(const Manifest& m);
// "sha256:" + hex(SHA-256(bytes)).
std::string cid_of(std::string_view canonical_bytes);
// True for "sha256:" followed by 64 lowercase hex digits.
bool is_cid(std::string_view s);

struct ParsedManifest {
  Manifest manifest;
  std::string cid;  // re-derived from the bytes
};
// Parses and checks a manifest: well-formed JSON, exactly the fields above with their
// types, canonical form (re-serializing gives the same bytes), consistent indices, fills
// and token count. Returns it with its CID. kInvalidArgument otherwise.
Result<ParsedManifest> parse_manifest(std::string_view bytes);

}  // namespace pf::rt

// processfork._core: Client methods for KV layout copies (pf_kv_copy) and keyed pages
// (pf_pages_*), added to the Client class that module.cpp defines.
#include "shims/python/client_binding.h"

namespace pf::python {

void bind_pages(nb::module_& m) {
  nb::object cls = m.attr("Client");
  // ---- KV layout copies (pf_kv_copy) ------------------------------------------------
  // runs: int64 [n, 4] rows of (page, page_slot, engine_token, count). Blocking, GIL
  // released; returns the bytes copied.
  nb::cpp_function_def(
      [](Client& c, const std::vector<std::uint64_t>& k_ptrs,
         const std::vector<std::uint64_t>& v_ptrs, std::uint64_t block_tokens,
         std::int64_t block_stride, std::int64_t token_stride, std::int64_t head_stride,
         std::uint32_t elem_bytes,
         nb::ndarray<const std::int64_t, nb::shape<-1, 4>, nb::c_contig, nb::device::cpu> runs,
         std::uint32_t layer_begin, std::uint32_t layer_end, bool store, std::uintptr_t stream) {
        if (k_ptrs.size() != v_ptrs.size()) {
          throw PfError{PF_INVALID_ARGUMENT, "kv copy: k_ptrs and v_ptrs differ in length"};
        }
        std::vector<pf_kv_run> rs(runs.shape(0));
        const std::int64_t* r = runs.data();
        for (std::size_t i = 0; i < rs.size(); ++i, r += 4) {
          if (r[0] < 0 || r[0] > UINT32_MAX || r[1] < 0 || r[1] > UINT32_MAX || r[2] < 0 ||
              r[3] < 0 || r[3] > UINT32_MAX) {
            throw PfError{PF_INVALID_ARGUMENT,
                          "kv copy: run " + std::to_string(i) +
                              " has a negative or out-of-range page, slot, token or count"};
          }
          rs[i] = pf_kv_run{static_cast<std::uint32_t>(r[0]), static_cast<std::uint32_t>(r[1]),
                            static_cast<std::uint32_t>(r[3]), 0, static_cast<std::uint64_t>(r[2])};
        }
        pf_kv_layout layout{};
        layout.struct_size = sizeof layout;
        layout.n_layers = static_cast<std::uint32_t>(k_ptrs.size());
        layout.k_ptrs = k_ptrs.data();
        layout.v_ptrs = v_ptrs.data();
        layout.block_tokens = block_tokens;
        layout.block_stride = block_stride;
        layout.token_stride = token_stride;
        layout.head_stride = head_stride;
        layout.elem_bytes = elem_bytes;
        std::uint64_t bytes = 0;
        c.call([&](pf_client* p) {
          return pf_kv_copy(p, &layout, rs.data(), rs.size(), layer_begin, layer_end,
                            store ? PF_KV_STORE : PF_KV_LOAD, reinterpret_cast<void*>(stream),
                            &bytes);
        });
        return bytes;
      },
      nb::scope(cls), nb::name("kv_copy"), nb::is_method(), "k_ptrs"_a, "v_ptrs"_a,
      "block_tokens"_a, "block_stride"_a, "token_stride"_a, "head_stride"_a, "elem_bytes"_a,
      "runs"_a, "layer_begin"_a, "layer_end"_a, "store"_a, "stream"_a = 0);

  // ---- keyed pages (pf_pages_*, protocol 1.2) -------------------------------------------
  // Methods of Client, added to the class object after its definition. Keys arrive as one
  // bytes object of n * PF_KEY_BYTES binary keys (processfork/_client.py converts and checks
  // the hex form). Every call is a round trip: GIL released.
  {
    auto key_bytes = [](const nb::bytes& keys) {
      if (keys.size() % PF_KEY_BYTES != 0) {
        throw PfError{PF_INVALID_ARGUMENT, "keys: " + std::to_string(keys.size()) +
                                               " bytes is not a whole number of " +
                                               std::to_string(PF_KEY_BYTES) + "-byte keys"};
      }
      const auto* p = static_cast<const std::uint8_t*>(static_cast<const void*>(keys.c_str()));
      return std::vector<std::uint8_t>(p, p + keys.size());
    };
    nb::cpp_function_def(
        [key_bytes](Client& c, const nb::bytes& keys, bool hold, std::optional<nb::bytes> ns) {
          const std::vector<std::uint8_t> k = key_bytes(keys);
          const std::vector<std::uint8_t> tag = namespace_bytes(ns);
          const std::size_t n = k.size() / PF_KEY_BYTES;
          std::vector<std::uint32_t> pages(n);
          std::size_t found = 0;
          c.call([&](pf_client* p) {
            return pf_pages_lookup_keys_ns(
                p, n == 0 ? nullptr : k.data(), n, tag.empty() ? nullptr : tag.data(),
                hold ? PF_LOOKUP_HOLD : 0u, pages.data(), pages.size(), &found);
          });
          pages.resize(found);
          return pages;
        },
        nb::scope(cls), nb::name("pages_lookup_keys"), nb::is_method(), "keys"_a, "hold"_a,
        "ns"_a.none() = nb::none());
    nb::cpp_function_def(
        [](Client& c, std::size_t n) {
          std::vector<std::uint32_t> pages(n);
          c.call([&](pf_client* p) { return pf_pages_alloc(p, n, pages.data(), pages.size()); });
          return pages;
        },
        nb::scope(cls), nb::name("pages_alloc"), nb::is_method(), "n"_a);
    nb::cpp_function_def(
        [key_bytes](Client& c, const nb::bytes& keys, const std::vector<std::uint32_t>& pages,
                    std::optional<nb::bytes> parent_key, std::optional<nb::bytes> ns) {
          const std::vector<std::uint8_t> k = key_bytes(keys);
          const std::vector<std::uint8_t> tag = namespace_bytes(ns);
          std::vector<std::uint8_t> parent;
          if (parent_key) {
            parent = key_bytes(*parent_key);
            if (parent.size() != PF_KEY_BYTES) {
              throw PfError{PF_INVALID_ARGUMENT, "parent_key must be one key"};
            }
          }
          if (k.size() != pages.size() * PF_KEY_BYTES) {
            throw PfError{PF_INVALID_ARGUMENT,
                          "publish: " + std::to_string(k.size() / PF_KEY_BYTES) + " keys for " +
                              std::to_string(pages.size()) + " pages"};
          }
          std::size_t added = 0;
          c.call([&](pf_client* p) {
            return pf_pages_publish_ns(p, k.empty() ? nullptr : k.data(),
                                       pages.empty() ? nullptr : pages.data(), pages.size(),
                                       parent_key ? parent.data() : nullptr,
                                       tag.empty() ? nullptr : tag.data(), &added);
          });
          return added;
        },
        nb::scope(cls), nb::name("pages_publish"), nb::is_method(), "keys"_a, "pages"_a,
        "parent_key"_a.none(), "ns"_a.none() = nb::none());
    nb::cpp_function_def(
        [](Client& c, const std::vector<std::uint32_t>& pages) {
          c.call([&](pf_client* p) {
            return pf_pages_release(p, pages.empty() ? nullptr : pages.data(), pages.size());
          });
        },
        nb::scope(cls), nb::name("pages_release"), nb::is_method(), "pages"_a);
  }
}

}  // namespace pf::python

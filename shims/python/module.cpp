// processfork._core: the nanobind extension under the Python package (docs/python.md).
//
// A thin layer over the C ABI (shims/include/processfork.h), compiled into the module
// together with the static client core, so the package needs no libprocessfork.so. The
// Python side (processfork/_client.py) shapes the answers into dataclasses; this file only
//  - releases the GIL around every call that may block (every round trip to the daemon),
//  - turns a failing pf_result into processfork.Error (or its subclass for the code),
//  - makes page views: NumPy arrays / DLPack-capable nb_ndarrays over the mapped pool,
//    owned by the Python Client object (the mapping lives as long as the connection).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "processfork.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

// A failed call: the pf_result and the library's message, raised as processfork.Error.
struct PfError {
  int code;
  std::string message;
};

[[noreturn]] void fail(pf_result r) {
  throw PfError{static_cast<int>(r), pf_last_error_message(nullptr)};
}
inline void check(pf_result r) {
  if (r != PF_OK) fail(r);
}

using Source = std::variant<std::uint64_t, std::string>;

// Keeps the string alive as long as the pf_source that points into it.
struct SourceHolder {
  std::string name;
  pf_source src{};
  explicit SourceHolder(const Source& s) {
    if (const auto* id = std::get_if<std::uint64_t>(&s)) {
      src = pf_source_branch(*id);
    } else {
      name = std::get<std::string>(s);
      src = pf_source_named(name.c_str());
    }
  }
  SourceHolder(const SourceHolder&) = delete;
};

nb::dict pool_info_dict(const pf_pool_info& i) {
  nb::dict d;
  d["layers"] = i.layers;
  d["kv_heads"] = i.kv_heads;
  d["head_dim"] = i.head_dim;
  d["page_tokens"] = i.page_tokens;
  d["dtype"] = i.dtype;
  d["page_bytes"] = i.page_bytes;
  d["chunk_bytes"] = i.chunk_bytes;
  d["capacity_bytes"] = i.capacity_bytes;
  d["capacity_pages"] = i.capacity_pages;
  d["lease"] = i.lease;
  d["daemon_pid"] = i.daemon_pid;
  d["protocol_major"] = i.protocol_major;
  d["protocol_minor"] = i.protocol_minor;
  d["backend"] = std::string(i.backend, strnlen(i.backend, sizeof i.backend));
  d["device"] = std::string(i.device, strnlen(i.device, sizeof i.device));
  d["device_memory"] = i.device_memory != 0;
  return d;
}

class Client {
 public:
  Client(std::optional<std::string> socket, std::uint32_t timeout_ms, bool attach,
         std::uint32_t spin_us) {
    pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
    cfg.socket_path = socket ? socket->c_str() : nullptr;
    cfg.timeout_ms = timeout_ms;
    cfg.flags = attach ? 0u : PF_CONNECT_NO_ATTACH;
    cfg.spin_us = spin_us;
    pf_result r;
    {
      nb::gil_scoped_release nogil;
      r = pf_connect(&cfg, &c_);
    }
    check(r);
  }
  ~Client() { close(); }

  void close() {
    pf_client* c = std::exchange(c_, nullptr);
    if (c != nullptr) {
      nb::gil_scoped_release nogil;
      pf_disconnect(c);
    }
  }
  bool closed() const { return c_ == nullptr; }

  // Runs f(pf_client*) -> pf_result with the GIL released; raises on failure.
  template <typename F>
  void call(F&& f) {
    pf_client* c = live();
    pf_result r;
    std::string msg;
    {
      nb::gil_scoped_release nogil;
      r = f(c);
      if (r != PF_OK) msg = pf_last_error_message(nullptr);
    }
    if (r != PF_OK) throw PfError{static_cast<int>(r), std::move(msg)};
  }

  // The size-query / fill loop of the JSON answers.
  template <typename F>
  std::string json(F&& f) {
    std::string out(4096, '\0');
    for (;;) {
      std::size_t need = 0;
      pf_client* c = live();
      pf_result r;
      std::string msg;
      {
        nb::gil_scoped_release nogil;
        r = f(c, out.data(), out.size(), &need);
        if (r != PF_OK) msg = pf_last_error_message(nullptr);
      }
      if (r == PF_INVALID_ARGUMENT && need > out.size()) {
        out.resize(need);
        continue;
      }
      if (r != PF_OK) throw PfError{static_cast<int>(r), std::move(msg)};
      out.resize(need > 0 ? need - 1 : 0);
      return out;
    }
  }

  pf_client* live() const {
    if (c_ == nullptr) throw PfError{PF_UNAVAILABLE, "the client is closed"};
    return c_;
  }

  pf_pool_info info() const {
    pf_pool_info i{};
    i.struct_size = sizeof i;
    check(pf_pool_info_get(live(), &i));
    return i;
  }

  void* page_ptr(std::uint32_t page) {
    void* p = nullptr;
    call([&](pf_client* c) { return pf_page_ptr(c, page, &p); });
    return p;
  }

  // A view of page `page`: [layers, 2, page_tokens, kv_heads, head_dim] of the pool's dtype
  // (bf16 as uint16, fp8 as uint8). The owner is the Python Client object.
  template <typename Array>
  Array page_view(nb::handle self, std::uint32_t page, bool require_host) {
    const pf_pool_info i = info();
    if (require_host && i.device_memory != 0) {
      throw PfError{PF_UNSUPPORTED, "page(): the pool is device memory (" +
                                        std::string(i.device, strnlen(i.device, sizeof i.device)) +
                                        "); use page_view()/page_torch() (DLPack) instead"};
    }
    void* p = page_ptr(page);
    nb::dlpack::dtype dt;
    switch (i.dtype) {
      case PF_DTYPE_BF16:
        dt = nb::dtype<std::uint16_t>();
        break;  // no bf16 in NumPy
      case PF_DTYPE_FP16:
        dt = {static_cast<std::uint8_t>(nb::dlpack::dtype_code::Float), 16, 1};
        break;
      case PF_DTYPE_FP32:
        dt = nb::dtype<float>();
        break;
      default:
        dt = nb::dtype<std::uint8_t>();
        break;  // fp8 formats: raw bytes
    }
    const std::size_t shape[5] = {i.layers, 2, i.page_tokens, i.kv_heads, i.head_dim};
    int device_type = nb::device::cpu::value;
    int device_id = 0;
    if (i.device_memory != 0) {
      device_type = nb::device::cuda::value;
      const char* colon = std::strchr(i.device, ':');
      device_id = colon != nullptr ? std::atoi(colon + 1) : 0;
    }
    return Array(p, 5, shape, self, nullptr, dt, device_type, device_id);
  }

 private:
  pf_client* c_ = nullptr;
};

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "processfork._core: the C++ layer under the processfork package (internal).";

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const PfError& e) {
      nb::object exc =
          nb::module_::import_("processfork._errors").attr("_from_code")(e.code, e.message);
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
    }
  });

  m.def("result_string",
        [](int code) { return std::string(pf_result_string(static_cast<pf_result>(code))); });
  m.def("abi_version", &pf_abi_version);
  m.def("version", [] { return std::string(pf_version_string()); });
  m.attr("MAX_FORK") = PF_MAX_FORK;
  m.attr("CID_BYTES") = PF_CID_BYTES;

  nb::class_<Client>(m, "Client")
      .def(nb::init<std::optional<std::string>, std::uint32_t, bool, std::uint32_t>(),
           "socket"_a.none(), "timeout_ms"_a = 0, "attach"_a = true, "spin_us"_a = 0)
      .def("close", &Client::close)
      .def_prop_ro("closed", &Client::closed)
      .def("pool_info", [](Client& c) { return pool_info_dict(c.info()); })
      .def("mapping_info",
           [](Client& c) {
             pf_mapping_info mi{};
             check(pf_mapping_info_get(c.live(), &mi));
             nb::dict d;
             d["attached"] = mi.attached != 0;
             d["mapped_chunks"] = mi.mapped_chunks;
             d["mapped_bytes"] = mi.mapped_bytes;
             d["epoch"] = mi.epoch;
             d["latest_epoch"] = mi.latest_epoch;
             d["base"] = reinterpret_cast<std::uintptr_t>(mi.base);
             return d;
           })
      .def("attach", [](Client& c) { c.call([](pf_client* p) { return pf_attach(p); }); })
      .def("pool_stats",
           [](Client& c) {
             pf_pool_stats s{};
             s.struct_size = sizeof s;
             c.call([&](pf_client* p) { return pf_pool_stats_get(p, &s); });
             nb::dict d;
             d["capacity_pages"] = s.capacity_pages;
             d["used_pages"] = s.used_pages;
             d["shared_pages"] = s.shared_pages;
             d["cached_pages"] = s.cached_pages;
             d["free_pages"] = s.free_pages;
             d["page_bytes"] = s.page_bytes;
             d["chunk_bytes"] = s.chunk_bytes;
             return d;
           })
      .def("branch_create",
           [](Client& c, const std::vector<std::uint32_t>& tokens) {
             pf_new_branch b{};
             c.call([&](pf_client* p) {
               return pf_branch_create(p, tokens.empty() ? nullptr : tokens.data(), tokens.size(),
                                       &b);
             });
             return std::make_tuple(b.branch, b.n_tokens, b.reused_tokens);
           })
      .def(
          "append",
          [](Client& c, std::uint64_t branch, const std::vector<std::uint32_t>& tokens) {
            std::vector<pf_write_run> runs(pf_append_max_runs(c.live(), tokens.size()));
            pf_append_result r{};
            c.call([&](pf_client* p) {
              return pf_append(p, branch, tokens.empty() ? nullptr : tokens.data(), tokens.size(),
                               runs.data(), runs.size(), &r);
            });
            std::vector<std::tuple<std::uint32_t, std::uint32_t, std::uint32_t, std::uint64_t>> out;
            for (std::size_t k = 0; k < r.n_runs; ++k) {
              out.emplace_back(runs[k].page, runs[k].first_slot, runs[k].count,
                               runs[k].first_token);
            }
            return std::make_tuple(r.first_token, r.pages_added, r.copied_page != 0,
                                   std::move(out));
          })
      .def("commit", [](Client& c,
                        std::uint64_t b) { c.call([&](pf_client* p) { return pf_commit(p, b); }); })
      .def("truncate",
           [](Client& c, std::uint64_t b, std::uint64_t n) {
             c.call([&](pf_client* p) { return pf_truncate(p, b, n); });
           })
      .def("branch_free",
           [](Client& c, std::uint64_t b) {
             c.call([&](pf_client* p) { return pf_branch_free(p, b); });
           })
      .def("detach", [](Client& c,
                        std::uint64_t b) { c.call([&](pf_client* p) { return pf_detach(p, b); }); })
      .def(
          "branch_view",
          [](Client& c, std::uint64_t b, bool with_tokens) {
            pf_branch_info info{};
            std::vector<std::uint32_t> pages, tokens;
            for (;;) {  // the branch may grow between the size query and the read
              c.call([&](pf_client* p) {
                return pf_branch_view(p, b, &info, nullptr, 0, nullptr, 0);
              });
              pages.resize(info.n_pages);
              tokens.resize(with_tokens ? info.n_tokens : 0);
              pf_result r;
              std::string msg;
              {
                nb::gil_scoped_release nogil;
                r = pf_branch_view(c.live(), b, &info, pages.data(), pages.size(),
                                   with_tokens ? tokens.data() : nullptr, tokens.size());
                if (r != PF_OK) msg = pf_last_error_message(nullptr);
              }
              if (r == PF_INVALID_ARGUMENT &&
                  (info.n_pages > pages.size() || (with_tokens && info.n_tokens > tokens.size()))) {
                continue;
              }
              if (r != PF_OK) throw PfError{static_cast<int>(r), msg};
              break;
            }
            pages.resize(info.n_pages);
            if (with_tokens) tokens.resize(info.n_tokens);
            nb::dict d;
            d["branch"] = info.branch;
            d["owner"] = info.owner;
            d["n_tokens"] = info.n_tokens;
            d["n_pages"] = info.n_pages;
            d["fill_in_last_page"] = info.fill_in_last_page;
            d["pages"] = pages;
            if (with_tokens) d["tokens"] = tokens;
            return d;
          },
          "branch"_a, "with_tokens"_a = false)
      .def(
          "snapshot",
          [](Client& c, std::uint64_t b, std::optional<std::string> name) {
            pf_snapshot_result r{};
            c.call([&](pf_client* p) {
              return pf_snapshot(p, b, name ? name->c_str() : nullptr, &r);
            });
            return std::make_tuple(std::string(r.cid), r.n_tokens, r.n_pages, r.created != 0);
          },
          "branch"_a, "name"_a.none() = nb::none())
      .def("fork",
           [](Client& c, const Source& source, std::uint32_t n) {
             SourceHolder s(source);
             std::vector<pf_branch_id> ids(n);
             char cid[PF_CID_BYTES] = {};
             c.call([&](pf_client* p) {
               return pf_fork(p, &s.src, n, ids.data(), ids.size(), cid, sizeof cid);
             });
             return std::make_pair(std::move(ids), std::string(cid));
           })
      .def("checkout",
           [](Client& c, const std::string& name) {
             pf_branch_id id = 0;
             char cid[PF_CID_BYTES] = {};
             c.call(
                 [&](pf_client* p) { return pf_checkout(p, name.c_str(), &id, cid, sizeof cid); });
             return std::make_pair(id, std::string(cid));
           })
      .def("merge",
           [](Client& c, const Source& from, const Source& into) {
             SourceHolder f(from), i(into);
             std::vector<std::uint32_t> tokens;
             pf_merge_result r{};
             for (;;) {
               pf_result rc;
               std::string msg;
               pf_client* p = c.live();
               {
                 nb::gil_scoped_release nogil;
                 rc = pf_merge(p, &f.src, &i.src, &r, tokens.empty() ? nullptr : tokens.data(),
                               tokens.size());
                 if (rc != PF_OK) msg = pf_last_error_message(nullptr);
               }
               if (rc == PF_INVALID_ARGUMENT && r.n_recompute_tokens > tokens.size()) {
                 tokens.resize(r.n_recompute_tokens);
                 continue;
               }
               if (rc != PF_OK) throw PfError{static_cast<int>(rc), msg};
               break;
             }
             tokens.resize(r.n_recompute_tokens);
             nb::dict d;
             d["fast_forward"] = r.outcome == PF_MERGE_FAST_FORWARD;
             d["branch"] = r.branch;
             d["common_tokens"] = r.common_tokens;
             d["cid"] = std::string(r.cid);
             d["base"] = std::string(r.base);
             d["recompute_tokens"] = tokens;
             return d;
           })
      .def("diff",
           [](Client& c, const Source& a, const Source& b) {
             SourceHolder sa(a), sb(b);
             return c.json([&](pf_client* p, char* buf, std::size_t cap, std::size_t* need) {
               return pf_diff(p, &sa.src, &sb.src, buf, cap, need);
             });
           })
      .def("log",
           [](Client& c, const std::string& name) {
             return c.json([&](pf_client* p, char* buf, std::size_t cap, std::size_t* need) {
               return pf_log(p, name.c_str(), buf, cap, need);
             });
           })
      .def("manifest",
           [](Client& c, const std::string& name) {
             return c.json([&](pf_client* p, char* buf, std::size_t cap, std::size_t* need) {
               return pf_manifest(p, name.c_str(), buf, cap, need);
             });
           })
      .def("snapshots", [](Client& c) { return c.json(pf_snapshots); })
      .def("refs_list", [](Client& c) { return c.json(pf_refs_list); })
      .def("health", [](Client& c) { return c.json(pf_health); })
      .def("branches", [](Client& c) { return c.json(pf_branches); })
      .def("pool_json", [](Client& c) { return c.json(pf_pool_json); })
      .def("ref_set",
           [](Client& c, const std::string& name, const std::string& target) {
             c.call([&](pf_client* p) { return pf_ref_set(p, name.c_str(), target.c_str()); });
           })
      .def("ref_get",
           [](Client& c, const std::string& name) {
             char cid[PF_CID_BYTES] = {};
             c.call([&](pf_client* p) { return pf_ref_get(p, name.c_str(), cid, sizeof cid); });
             return std::string(cid);
           })
      .def("ref_delete",
           [](Client& c, const std::string& name) {
             c.call([&](pf_client* p) { return pf_ref_delete(p, name.c_str()); });
           })
      .def("unpin",
           [](Client& c, const std::string& cid) {
             c.call([&](pf_client* p) { return pf_unpin(p, cid.c_str()); });
           })
      .def(
          "gc",
          [](Client& c, bool drop_cache) {
            pf_gc_result g{};
            c.call([&](pf_client* p) { return pf_gc(p, drop_cache ? PF_GC_DROP_CACHE : 0u, &g); });
            return std::make_pair(g.evicted_pages, g.released_chunks);
          },
          "drop_cache"_a = false)
      .def("page_ptr",
           [](Client& c, std::uint32_t page) {
             return reinterpret_cast<std::uintptr_t>(c.page_ptr(page));
           })
      .def("page_array",
           [](nb::handle self, std::uint32_t page) {
             return nb::cast<Client&>(self).page_view<nb::ndarray<nb::numpy>>(self, page, true);
           })
      .def("page_dlpack",
           [](nb::handle self, std::uint32_t page) {
             return nb::cast<Client&>(self).page_view<nb::ndarray<nb::array_api>>(self, page,
                                                                                  false);
           })
      // ---- KV layout copies (pf_kv_copy) ------------------------------------------------
      // runs: int64 [n, 4] rows of (page, page_slot, engine_token, count). Blocking, GIL
      // released; returns the bytes copied.
      .def(
          "kv_copy",
          [](Client& c, const std::vector<std::uint64_t>& k_ptrs,
             const std::vector<std::uint64_t>& v_ptrs, std::uint64_t block_tokens,
             std::int64_t block_stride, std::int64_t token_stride, std::int64_t head_stride,
             std::uint32_t elem_bytes,
             nb::ndarray<const std::int64_t, nb::shape<-1, 4>, nb::c_contig, nb::device::cpu> runs,
             std::uint32_t layer_begin, std::uint32_t layer_end, bool store,
             std::uintptr_t stream) {
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
              rs[i] =
                  pf_kv_run{static_cast<std::uint32_t>(r[0]), static_cast<std::uint32_t>(r[1]),
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
          "k_ptrs"_a, "v_ptrs"_a, "block_tokens"_a, "block_stride"_a, "token_stride"_a,
          "head_stride"_a, "elem_bytes"_a, "runs"_a, "layer_begin"_a, "layer_end"_a, "store"_a,
          "stream"_a = 0);

  // ---- keyed pages (pf_pages_*, protocol 1.2) -------------------------------------------
  // Methods of Client, added to the class object after its definition. Keys arrive as one
  // bytes object of n * PF_KEY_BYTES binary keys (processfork/_client.py converts and checks
  // the hex form). Every call is a round trip: GIL released.
  {
    nb::object cls = m.attr("Client");
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
        [key_bytes](Client& c, const nb::bytes& keys, bool hold) {
          const std::vector<std::uint8_t> k = key_bytes(keys);
          const std::size_t n = k.size() / PF_KEY_BYTES;
          std::vector<std::uint32_t> pages(n);
          std::size_t found = 0;
          c.call([&](pf_client* p) {
            return pf_pages_lookup_keys(p, n == 0 ? nullptr : k.data(), n,
                                        hold ? PF_LOOKUP_HOLD : 0u, pages.data(), pages.size(),
                                        &found);
          });
          pages.resize(found);
          return pages;
        },
        nb::scope(cls), nb::name("pages_lookup_keys"), nb::is_method(), "keys"_a, "hold"_a);
    nb::cpp_function_def(
        [](Client& c, std::size_t n) {
          std::vector<std::uint32_t> pages(n);
          c.call([&](pf_client* p) { return pf_pages_alloc(p, n, pages.data(), pages.size()); });
          return pages;
        },
        nb::scope(cls), nb::name("pages_alloc"), nb::is_method(), "n"_a);
    nb::cpp_function_def(
        [key_bytes](Client& c, const nb::bytes& keys, const std::vector<std::uint32_t>& pages,
                    std::optional<nb::bytes> parent_key) {
          const std::vector<std::uint8_t> k = key_bytes(keys);
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
            return pf_pages_publish(p, k.empty() ? nullptr : k.data(),
                                    pages.empty() ? nullptr : pages.data(), pages.size(),
                                    parent_key ? parent.data() : nullptr, &added);
          });
          return added;
        },
        nb::scope(cls), nb::name("pages_publish"), nb::is_method(), "keys"_a, "pages"_a,
        "parent_key"_a.none());
    nb::cpp_function_def(
        [](Client& c, const std::vector<std::uint32_t>& pages) {
          c.call([&](pf_client* p) {
            return pf_pages_release(p, pages.empty() ? nullptr : pages.data(), pages.size());
          });
        },
        nb::scope(cls), nb::name("pages_release"), nb::is_method(), "pages"_a);
  }
  // ---- end of keyed pages ------------------------------------------------------------------
}

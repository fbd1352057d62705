// processfork._core: the nanobind extension under the Python package (docs/python.md).
//
// A thin layer over the C ABI (shims/include/processfork.h), compiled into the module
// together with the static client core, so the package needs no libprocessfork.so. Answers
// are the bound pf_* structs (module_results.cpp), read by attribute; the Python side
// (processfork/_client.py) shapes them into its dataclasses. These files only
//  - releases the GIL around every call that may block (every round trip to the daemon),
//  - turns a failing pf_result into processfork.Error (or its subclass for the code),
//  - makes page views: NumPy arrays / DLPack-capable nb_ndarrays over the mapped pool,
//    owned by the Python Client object (the mapping lives as long as the connection).
#include "shims/python/client_binding.h"

namespace nb = nanobind;
using namespace nb::literals;  // NOLINT: "name"_a in every binding

using pf::python::AppendOut;
using pf::python::bind_pages;
using pf::python::bind_results;
using pf::python::check;
using pf::python::Client;
using pf::python::ForkOut;
using pf::python::MergeOut;
using pf::python::namespace_bytes;
using pf::python::PfError;
using pf::python::pool_info_dict;
using pf::python::Source;
using pf::python::SourceHolder;

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
  m.def("last_error_trail", [] { return std::string(pf_last_error_trail(nullptr)); });
  m.def("dtype_name", [](std::uint32_t dtype) -> std::optional<std::string> {
    const char* name = pf_dtype_name(dtype);
    return name ? std::optional<std::string>(name) : std::nullopt;
  });
  m.def("dtype_bytes", [](std::uint32_t dtype) { return pf_dtype_bytes(dtype); });
  m.attr("MAX_FORK") = PF_MAX_FORK;
  // kv_copy's stream for the library's own stream (PF_CUDA_STREAM_OWN, ABI 1.5).
  m.attr("CUDA_STREAM_OWN") = reinterpret_cast<std::uintptr_t>(PF_CUDA_STREAM_OWN);
  m.attr("CID_BYTES") = PF_CID_BYTES;
  bind_results(m);

  nb::class_<Client>(m, "Client")
      .def(nb::init<std::optional<std::string>, std::uint32_t, bool, std::uint32_t, bool,
                    std::uint32_t>(),
           "socket"_a.none(), "timeout_ms"_a = 0, "attach"_a = true, "spin_us"_a = 0,
           "reconnect"_a = true, "reconnect_timeout_ms"_a = 0)
      .def("close", &Client::close)
      .def_prop_ro("closed", &Client::closed)
      .def_prop_ro("generation", [](const Client& c) { return pf_client_generation(c.live()); })
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
             return s;
           })
      .def(
          "branch_create",
          [](Client& c, const std::vector<std::uint32_t>& tokens, std::optional<nb::bytes> ns) {
            const std::vector<std::uint8_t> tag = namespace_bytes(ns);
            pf_new_branch b{};
            c.call([&](pf_client* p) {
              return pf_branch_create_ns(p, tokens.empty() ? nullptr : tokens.data(), tokens.size(),
                                         tag.empty() ? nullptr : tag.data(), &b);
            });
            return b;
          },
          "tokens"_a, "ns"_a.none() = nb::none())
      .def("append",
           [](Client& c, std::uint64_t branch, const std::vector<std::uint32_t>& tokens) {
             AppendOut out;
             out.runs.resize(pf_append_max_runs(c.live(), tokens.size()));
             c.call([&](pf_client* p) {
               return pf_append(p, branch, tokens.empty() ? nullptr : tokens.data(), tokens.size(),
                                out.runs.data(), out.runs.size(), &out.result);
             });
             out.runs.resize(out.result.n_runs);
             return out;
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
          // wait_pages: return once the first min(wait_pages, n_pages) pages are readable
          // (pf_branch_view_ready; UINT64_MAX: every page). The size query never waits.
          [](Client& c, std::uint64_t b, bool with_tokens, std::uint64_t wait_pages) {
            pf_branch_info info{};
            std::vector<std::uint32_t> pages, tokens;
            for (;;) {  // the branch may grow between the size query and the read
              c.call([&](pf_client* p) {
                return pf_branch_view_ready(p, b, 0, &info, nullptr, 0, nullptr, 0);
              });
              pages.resize(info.n_pages);
              tokens.resize(with_tokens ? info.n_tokens : 0);
              pf_result r;
              std::string msg;
              {
                nb::gil_scoped_release nogil;
                r = pf_branch_view_ready(c.live(), b, wait_pages, &info, pages.data(), pages.size(),
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
            d["ready_pages"] = info.ready_pages;
            d["pages"] = pages;
            if (with_tokens) d["tokens"] = tokens;
            return d;
          },
          "branch"_a, "with_tokens"_a = false, "wait_pages"_a = UINT64_MAX)
      .def(
          "snapshot",
          [](Client& c, std::uint64_t b, std::optional<std::string> name) {
            pf_snapshot_result r{};
            c.call([&](pf_client* p) {
              return pf_snapshot(p, b, name ? name->c_str() : nullptr, &r);
            });
            return r;
          },
          "branch"_a, "name"_a.none() = nb::none())
      .def("fork",
           [](Client& c, const Source& source, std::uint32_t n) {
             SourceHolder s(source);
             ForkOut out;
             out.branches.resize(n);
             c.call([&](pf_client* p) {
               return pf_fork_branches(p, &s.src, n, out.branches.data(), out.branches.size(),
                                       &out.result);
             });
             return out;
           })
      .def("checkout",
           [](Client& c, const std::string& name) {
             pf_checkout_result out{};
             c.call([&](pf_client* p) { return pf_checkout_branch(p, name.c_str(), &out); });
             return out;
           })
      .def("merge",
           [](Client& c, const Source& from, const Source& into) {
             SourceHolder f(from), i(into);
             MergeOut out;
             std::vector<std::uint32_t>& tokens = out.recompute_tokens;
             pf_merge_result& r = out.result;
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
             return out;
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
      .def("wait_durable",
           [](Client& c, const std::string& cid) {
             c.call([&](pf_client* p) { return pf_wait_durable(p, cid.c_str()); });
           })
      .def(
          "gc",
          [](Client& c, bool drop_cache) {
            pf_gc_result g{};
            c.call([&](pf_client* p) { return pf_gc(p, drop_cache ? PF_GC_DROP_CACHE : 0u, &g); });
            return g;
          },
          "drop_cache"_a = false)
      .def("page_ptr",
           [](Client& c, std::uint32_t page) {
             return reinterpret_cast<std::uintptr_t>(c.page_ptr(page));
           })
      .def("page_access",
           [](Client& c, std::uint32_t page) {
             std::uint32_t flags = 0;
             c.call([&](pf_client* p) { return pf_page_access(p, page, &flags); });
             return flags;
           })
      .def("page_array",
           [](nb::handle self, std::uint32_t page) {
             return nb::cast<Client&>(self).page_view<nb::numpy>(self, page, true);
           })
      .def("page_dlpack", [](nb::handle self, std::uint32_t page) {
        return nb::cast<Client&>(self).page_view<nb::array_api>(self, page, false);
      });

  bind_pages(m);
}

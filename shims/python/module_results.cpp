// processfork._core: the answer types, bound field by field (read-only attributes named as
// in processfork.h), so Python reads every result by name and never unpacks a tuple.
#include "shims/python/client_binding.h"

namespace pf::python {

void bind_results(nb::module_& m) {
  nb::class_<pf_new_branch>(m, "NewBranch")
      .def_ro("branch", &pf_new_branch::branch)
      .def_ro("n_tokens", &pf_new_branch::n_tokens)
      .def_ro("reused_tokens", &pf_new_branch::reused_tokens);

  nb::class_<pf_write_run>(m, "WriteRun")
      .def_ro("page", &pf_write_run::page)
      .def_ro("first_slot", &pf_write_run::first_slot)
      .def_ro("count", &pf_write_run::count)
      .def_ro("first_token", &pf_write_run::first_token);

  nb::class_<AppendOut>(m, "Appended")
      .def_prop_ro("first_token", [](const AppendOut& a) { return a.result.first_token; })
      .def_prop_ro("pages_added", [](const AppendOut& a) { return a.result.pages_added; })
      .def_prop_ro("copied_page", [](const AppendOut& a) { return a.result.copied_page != 0; })
      .def_ro("runs", &AppendOut::runs);

  nb::class_<pf_snapshot_result>(m, "SnapshotResult")
      .def_prop_ro("cid", [](const pf_snapshot_result& s) { return text_of(s.cid, sizeof s.cid); })
      .def_ro("n_tokens", &pf_snapshot_result::n_tokens)
      .def_ro("n_pages", &pf_snapshot_result::n_pages)
      .def_prop_ro("created", [](const pf_snapshot_result& s) { return s.created != 0; });

  nb::class_<ForkOut>(m, "Forked")
      .def_ro("branches", &ForkOut::branches)
      .def_prop_ro("n_tokens", [](const ForkOut& f) { return f.result.n_tokens; })
      .def_prop_ro("source", [](const ForkOut& f) {
        return text_of(f.result.source, sizeof f.result.source);
      });

  nb::class_<pf_checkout_result>(m, "CheckedOut")
      .def_ro("branch", &pf_checkout_result::branch)
      .def_ro("n_tokens", &pf_checkout_result::n_tokens)
      .def_prop_ro("cid", [](const pf_checkout_result& c) { return text_of(c.cid, sizeof c.cid); });

  nb::class_<MergeOut>(m, "Merged")
      .def_prop_ro("fast_forward",
                   [](const MergeOut& o) { return o.result.outcome == PF_MERGE_FAST_FORWARD; })
      .def_prop_ro("branch", [](const MergeOut& o) { return o.result.branch; })
      .def_prop_ro("common_tokens", [](const MergeOut& o) { return o.result.common_tokens; })
      .def_prop_ro("cid",
                   [](const MergeOut& o) { return text_of(o.result.cid, sizeof o.result.cid); })
      .def_prop_ro("base",
                   [](const MergeOut& o) { return text_of(o.result.base, sizeof o.result.base); })
      .def_ro("recompute_tokens", &MergeOut::recompute_tokens);

  nb::class_<pf_gc_result>(m, "GcStats")
      .def_ro("evicted_pages", &pf_gc_result::evicted_pages)
      .def_ro("released_chunks", &pf_gc_result::released_chunks);

  nb::class_<pf_pool_stats>(m, "PoolStats")
      .def_ro("capacity_pages", &pf_pool_stats::capacity_pages)
      .def_ro("used_pages", &pf_pool_stats::used_pages)
      .def_ro("shared_pages", &pf_pool_stats::shared_pages)
      .def_ro("cached_pages", &pf_pool_stats::cached_pages)
      .def_ro("free_pages", &pf_pool_stats::free_pages)
      .def_ro("page_bytes", &pf_pool_stats::page_bytes)
      .def_ro("chunk_bytes", &pf_pool_stats::chunk_bytes);
}

}  // namespace pf::python

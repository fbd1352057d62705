// The Python Client over the C ABI (shims/include/processfork.h), shared by the files of
// the processfork._core extension (module.cpp, module_results.cpp, module_pages.cpp).
//
// Contract: every call that may block (every round trip to the daemon) runs with the GIL
// released; a failing pf_result is thrown as PfError, which module.cpp translates into
// processfork.Error (or its subclass for the code). Page views are owned by the Python
// Client object, so the mapping outlives every view — but a reconnect to a restarted daemon
// maps the pool anew: views of generation g stay valid memory until generation g + 2 begins
// (docs/python.md "Daemon restarts").
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "base/device_name.h"
#include "processfork.h"

namespace pf::python {

namespace nb = nanobind;
using namespace nb::literals;  // NOLINT: "name"_a in every binding

// A failed call: the pf_result and the library's message, raised as processfork.Error.
struct PfError {
  int code;
  std::string message;
};

[[noreturn]] inline void fail(pf_result r) {
  throw PfError{static_cast<int>(r), pf_last_error_message(nullptr)};
}
inline void check(pf_result r) {
  if (r != PF_OK) fail(r);
}

// A fixed, NUL-padded char field of a pf_* struct as text (never past its end).
// A namespace argument: None (the default namespace; empty result) or exactly
// PF_NAMESPACE_BYTES bytes. The Python layer (processfork/_client.py) normalizes hex first.
inline std::vector<std::uint8_t> namespace_bytes(const std::optional<nanobind::bytes>& ns) {
  if (!ns) return {};
  if (ns->size() != PF_NAMESPACE_BYTES) {
    throw PfError{PF_INVALID_ARGUMENT, "namespace: " + std::to_string(ns->size()) +
                                           " bytes, expected " +
                                           std::to_string(PF_NAMESPACE_BYTES)};
  }
  const auto* p = static_cast<const std::uint8_t*>(static_cast<const void*>(ns->c_str()));
  return std::vector<std::uint8_t>(p, p + ns->size());
}

inline std::string text_of(const char* field, std::size_t capacity) {
  return std::string(field, strnlen(field, capacity));
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

inline nb::dict pool_info_dict(const pf_pool_info& i) {
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
  d["backend"] = text_of(i.backend, sizeof i.backend);
  d["device"] = text_of(i.device, sizeof i.device);
  d["device_memory"] = i.device_memory != 0;
  d["boot_epoch"] = i.boot_epoch;
  return d;
}

class Client {
 public:
  Client(std::optional<std::string> socket, std::uint32_t timeout_ms, bool attach,
         std::uint32_t spin_us, bool reconnect, std::uint32_t reconnect_timeout_ms) {
    pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
    cfg.socket_path = socket ? socket->c_str() : nullptr;
    cfg.timeout_ms = timeout_ms;
    cfg.flags = (attach ? 0u : PF_CONNECT_NO_ATTACH) | (reconnect ? 0u : PF_CONNECT_NO_RECONNECT);
    cfg.spin_us = spin_us;
    cfg.reconnect_timeout_ms = reconnect_timeout_ms;
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
  // (bf16 as uint16, fp8 as uint8). The owner is the Python Client object. Read-only
  // (nb::ro: NumPy raises on assignment) unless this session may write the page
  // (pf_page_access); a view keeps the access it was made with.
  template <typename Framework>
  nb::object page_view(nb::handle self, std::uint32_t page, bool require_host) {
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
      Result<DeviceName> device = parse_device_name(text_of(i.device, sizeof i.device));
      if (!device.is_ok() || device->kind != DeviceName::Kind::kCuda) {
        throw PfError{PF_PROTOCOL, "the pool's device '" + text_of(i.device, sizeof i.device) +
                                       "' is not cuda:N"};
      }
      device_id = device->ordinal;
    }
    std::uint32_t access = 0;
    check(pf_page_access(live(), page, &access));
    if ((access & PF_PAGE_WRITABLE) != 0) {
      return nb::cast(
          nb::ndarray<Framework>(p, 5, shape, self, nullptr, dt, device_type, device_id),
          nb::rv_policy::reference);
    }
    return nb::cast(
        nb::ndarray<Framework, nb::ro>(p, 5, shape, self, nullptr, dt, device_type, device_id),
        nb::rv_policy::reference);
  }

 private:
  pf_client* c_ = nullptr;
};

// Answers that carry arrays besides a pf_* struct (bound in module_results.cpp).
struct AppendOut {
  pf_append_result result{};
  std::vector<pf_write_run> runs;
};
struct ForkOut {
  pf_fork_result result{};
  std::vector<pf_branch_id> branches;
};
struct MergeOut {
  pf_merge_result result{};
  std::vector<std::uint32_t> recompute_tokens;
};

// Declared here, defined in module_results.cpp and module_pages.cpp.
void bind_results(nanobind::module_& m);
void bind_pages(nanobind::module_& m);

}  // namespace pf::python

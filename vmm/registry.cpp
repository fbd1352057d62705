#include "vmm/registry.h"

#include <charconv>
#include <mutex>
#include <utility>

#include "base/device_name.h"
#include "vmm/fault_backend.h"
#include "vmm/host_backend.h"
#if defined(PF_HAVE_CUDA)
#include "vmm/cuda_backend.h"
#endif

namespace pf::vmm {
namespace {

struct Registry {
  std::mutex mutex;
  std::vector<std::pair<std::string, BackendFactory>> entries;
};

Result<std::unique_ptr<Backend>> host_factory(int /*ordinal*/) {
  return make_host_backend();
}

Registry& registry() {
  static Registry* r = [] {
    auto* fresh = new Registry;  // never destroyed: usable from static destructors
    fresh->entries.emplace_back("host", &host_factory);
#if defined(PF_HAVE_CUDA)
    fresh->entries.emplace_back("cuda", &make_cuda_backend);
#endif
    return fresh;
  }();
  return *r;
}

BackendFactory find_factory(std::string_view name) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  for (const auto& [n, f] : r.entries) {
    if (n == name) return f;
  }
  return nullptr;
}

}  // namespace

void register_backend(std::string name, BackendFactory factory) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  for (auto& [n, f] : r.entries) {
    if (n == name) {
      f = factory;
      return;
    }
  }
  r.entries.emplace_back(std::move(name), factory);
}

std::vector<std::string> registered_backends() {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  std::vector<std::string> names;
  for (const auto& entry : r.entries) names.push_back(entry.first);
  return names;
}

Result<BackendChoice> open_backend(std::string_view spec) {
  if (spec.starts_with("fault:")) {
    PF_ASSIGN_OR_RETURN(BackendChoice inner, open_backend(spec.substr(6)));
    return BackendChoice{std::make_unique<FaultBackend>(std::move(inner.backend)),
                         "fault decorator over: " + inner.reason};
  }
  if (spec == "auto") {
    if (BackendFactory cuda = find_factory("cuda")) {
      auto gpu = cuda(0);
      if (gpu.is_ok()) {
        return BackendChoice{std::move(gpu).value(),
                             "auto: chose cuda:0 (a usable GPU is present)"};
      }
      return BackendChoice{make_host_backend(),
                           "auto: chose host (cuda:0 unusable: " + gpu.status().message() + ")"};
    }
    return BackendChoice{make_host_backend(), "auto: chose host (built without CUDA)"};
  }
  // "host", "cuda:N"; any other "name" or "name:N" is looked up as a registered backend.
  std::string_view name = spec;
  int ordinal = 0;
  if (Result<DeviceName> device = parse_device_name(spec); device.is_ok()) {
    name = device->kind == DeviceName::Kind::kHost ? "host" : "cuda";
    ordinal = device->ordinal;
  } else if (spec.starts_with("host") || spec.find(':') != std::string_view::npos) {
    return device.take_status();
  }
  BackendFactory factory = find_factory(name);
  if (factory == nullptr) {
    return PF_ERROR(Code::kNotFound, "no backend named '" + std::string(name) +
                                         "' in this build (registered: host" +
#if defined(PF_HAVE_CUDA)
                                         std::string(", cuda") +
#else
                                         std::string("; CUDA was not built") +
#endif
                                         ")");
  }
  PF_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, factory(ordinal));
  std::string reason = "chose " + backend->device() + " (asked for " + std::string(spec) + ")";
  return BackendChoice{std::move(backend), std::move(reason)};
}

}  // namespace pf::vmm

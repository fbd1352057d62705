// Backend registry: backends are registered at run time by name and opened from a device
// spec (DESIGN §9, in the manner of ggml-backend-reg). A CUDA build registers `cuda` next
// to `host`; opening `auto` picks cuda:0 when a usable GPU is present, else host, and says
// why in BackendChoice::reason.
//
// Specs: "auto" | "host" | "cuda" (= cuda:0) | "cuda:N" | "fault:<spec>" (the fault
// decorator over <spec>, with no rules set).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/backend.h"

namespace pf::vmm {

// Makes a backend for device ordinal `ordinal` (0 for backends without devices).
using BackendFactory = Result<std::unique_ptr<Backend>> (*)(int ordinal);

// Registers (or replaces) a backend factory under `name`. Thread-safe.
void register_backend(std::string name, BackendFactory factory);
// Names registered so far, built-ins included, in registration order.
std::vector<std::string> registered_backends();

struct BackendChoice {
  std::unique_ptr<Backend> backend;
  std::string reason;  // one line for logs: which backend, and why that one
};

// Opens the backend a spec names. Errors: kInvalidArgument (malformed spec), kNotFound
// (backend not compiled in), or the backend's own error (e.g. kUnavailable without a GPU).
Result<BackendChoice> open_backend(std::string_view spec);

}  // namespace pf::vmm

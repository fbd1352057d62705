#include "vmm/cuda_driver.h"

#include <dlfcn.h>

#include <mutex>
#include <string>
#include <string_view>

namespace pf::vmm::cuda {
namespace {

// cuda.h maps these names to versioned ABI symbols; the loader must ask for the same ones.
static_assert(std::string_view(PF_CU_SYMBOL(cuDevicePrimaryCtxRelease)) ==
              "cuDevicePrimaryCtxRelease_v2");
static_assert(std::string_view(PF_CU_SYMBOL(cuMemcpyHtoD)) == "cuMemcpyHtoD_v2");
static_assert(std::string_view(PF_CU_SYMBOL(cuMemcpyDtoH)) == "cuMemcpyDtoH_v2");
static_assert(std::string_view(PF_CU_SYMBOL(cuStreamSynchronize)) == "cuStreamSynchronize");
static_assert(std::string_view(PF_CU_SYMBOL(cuDeviceGetUuid)) == "cuDeviceGetUuid_v2");

constexpr const char* kLibrary = "libcuda.so.1";

struct Loaded {
  std::once_flag once;
  DriverApi api;
  Status status;
};

Loaded& loaded() {
  static Loaded* l = new Loaded();  // never destroyed: usable during static destruction
  return *l;
}

// Resolves `symbol` into `*slot`; false when the library lacks it.
template <typename Fn>
bool resolve(void* lib, const char* symbol, Fn* slot) {
  dlerror();  // clear
  void* p = dlsym(lib, symbol);
  if (p == nullptr) return false;
  *slot = reinterpret_cast<Fn>(p);
  return true;
}

Status load_once(DriverApi* api) {
  void* lib = dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    return PF_ERROR(Code::kUnavailable, std::string("CUDA driver (") + kLibrary +
                                            ") not found: " + (why ? why : "dlopen failed"));
  }
  DriverApi table;
#define PF_CU_RESOLVE_REQUIRED(name)                                                          \
  if (!resolve(lib, PF_CU_SYMBOL(name), &table.pfn_##name)) {                                 \
    dlclose(lib);                                                                             \
    return PF_ERROR(Code::kUnavailable, std::string("CUDA driver (") + kLibrary +           \
                                            ") lacks " PF_CU_SYMBOL(name) ": the driver is " \
                                            "older than this build needs (CUDA 12+)"); \
  }
  PF_CU_REQUIRED_ENTRY_POINTS(PF_CU_RESOLVE_REQUIRED)
#undef PF_CU_RESOLVE_REQUIRED
#define PF_CU_RESOLVE_OPTIONAL(name) (void)resolve(lib, PF_CU_SYMBOL(name), &table.pfn_##name);
  PF_CU_OPTIONAL_ENTRY_POINTS(PF_CU_RESOLVE_OPTIONAL)
#undef PF_CU_RESOLVE_OPTIONAL
  // cuDriverGetVersion works before cuInit.
  if (table.pfn_cuDriverGetVersion(&table.driver_version) != CUDA_SUCCESS) {
    table.driver_version = 0;
  }
  *api = table;  // `lib` stays open for the life of the process
  return Status::ok();
}

std::string_view function_name(const char* call) {
  std::string_view s(call);
  if (auto paren = s.find('('); paren != std::string_view::npos) s = s.substr(0, paren);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

}  // namespace

Status load_driver() {
  Loaded& l = loaded();
  std::call_once(l.once, [&l] { l.status = load_once(&l.api); });
  return l.status;
}

const DriverApi& api() {
  return loaded().api;
}

void install_driver_for_testing(const DriverApi& fake) {
  Loaded& l = loaded();
  std::call_once(l.once, [] {});  // load_driver() never loads libcuda from now on
  l.api = fake;
  l.status = Status::ok();
}

std::string result_text(CUresult result) {
  const DriverApi& a = api();
  const char* name = nullptr;
  const char* text = nullptr;
  if (a.pfn_cuGetErrorName == nullptr || a.pfn_cuGetErrorName(result, &name) != CUDA_SUCCESS ||
      name == nullptr) {
    return "CUresult " + std::to_string(static_cast<int>(result));
  }
  std::string out(name);
  if (a.pfn_cuGetErrorString != nullptr && a.pfn_cuGetErrorString(result, &text) == CUDA_SUCCESS &&
      text != nullptr) {
    out += " (";
    out += text;
    out += ")";
  }
  return out;
}

Status driver_error(CUresult result, const char* call, const char* file, int line) {
  const Code code = result == CUDA_ERROR_OUT_OF_MEMORY ? Code::kOutOfMemory : Code::kDriver;
  return driver_error(code, {}, result, call, file, line);
}

Status driver_error(Code code, std::string_view context, CUresult result, const char* call,
                    const char* file, int line) {
  std::string message;
  if (!context.empty()) {
    message += context;
    message += ": ";
  }
  message += function_name(call);
  message += " failed: ";
  message += result_text(result);
  return detail::with_frame(Status(code, std::move(message)), file, line);
}

}  // namespace pf::vmm::cuda

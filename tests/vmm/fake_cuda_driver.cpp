// The fake CUDA driver (fake_cuda_driver.h).
#include "tests/vmm/fake_cuda_driver.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "vmm/cuda_driver.h"

namespace pf::vmm::fake_cuda {
namespace {

constexpr std::size_t kGranularity = 2u << 20;

struct Allocation {
  std::size_t bytes = 0;
  int device = 0;
  std::vector<unsigned char> data;
};

struct Mapping {
  std::size_t bytes = 0;
  std::shared_ptr<Allocation> alloc;
  unsigned long long flags = CU_MEM_ACCESS_FLAGS_PROT_NONE;
};

struct State {
  std::mutex mu;  // guards everything below; copies run on other threads
  Config config;
  std::map<CUmemGenericAllocationHandle, std::shared_ptr<Allocation>> handles;
  std::map<ino_t, std::shared_ptr<Allocation>> exported;  // memfd inode -> allocation
  std::map<CUdeviceptr, std::size_t> reservations;
  std::map<CUdeviceptr, Mapping> mappings;
  std::vector<AccessCall> access;
  std::vector<std::string> events;
  CUmemGenericAllocationHandle next_handle = 0x1000;
  CUdeviceptr next_va = CUdeviceptr{1} << 40;
};

State& state() {
  static State* s = new State();
  return *s;
}
Counts& counters() {
  static Counts* c = new Counts();
  return *c;
}
thread_local CUcontext current_ctx = nullptr;
int primary_ctx_token = 0;

// The mapping containing [p, p + n), or null.
Mapping* find_mapping(State& s, CUdeviceptr p, std::size_t n, std::size_t* offset) {
  auto it = s.mappings.upper_bound(p);
  if (it == s.mappings.begin()) return nullptr;
  --it;
  if (p + n > it->first + it->second.bytes) return nullptr;
  *offset = p - it->first;
  return &it->second;
}

bool valid_device(CUdevice d) {
  return d >= 0 && static_cast<std::size_t>(d) < state().config.devices.size();
}

CUresult GetErrorName(CUresult r, const char** name) {
  switch (r) {
    case CUDA_SUCCESS:
      *name = "CUDA_SUCCESS";
      return CUDA_SUCCESS;
    case CUDA_ERROR_INVALID_VALUE:
      *name = "CUDA_ERROR_INVALID_VALUE";
      return CUDA_SUCCESS;
    case CUDA_ERROR_OUT_OF_MEMORY:
      *name = "CUDA_ERROR_OUT_OF_MEMORY";
      return CUDA_SUCCESS;
    case CUDA_ERROR_INVALID_DEVICE:
      *name = "CUDA_ERROR_INVALID_DEVICE";
      return CUDA_SUCCESS;
    case CUDA_ERROR_NOT_SUPPORTED:
      *name = "CUDA_ERROR_NOT_SUPPORTED";
      return CUDA_SUCCESS;
    case CUDA_ERROR_UNKNOWN:
      *name = "CUDA_ERROR_UNKNOWN";
      return CUDA_SUCCESS;
    default:
      return CUDA_ERROR_INVALID_VALUE;
  }
}
CUresult GetErrorString(CUresult, const char** text) {
  *text = "fake driver";
  return CUDA_SUCCESS;
}
CUresult Init(unsigned int) {
  return CUDA_SUCCESS;
}
CUresult DriverGetVersion(int* v) {
  *v = 13000;
  return CUDA_SUCCESS;
}
CUresult DeviceGetCount(int* n) {
  *n = static_cast<int>(state().config.devices.size());
  return CUDA_SUCCESS;
}
CUresult DeviceGet(CUdevice* d, int ordinal) {
  if (!valid_device(ordinal)) return CUDA_ERROR_INVALID_DEVICE;
  *d = ordinal;
  return CUDA_SUCCESS;
}
CUresult DeviceGetAttribute(int* v, CUdevice_attribute, CUdevice d) {
  if (!valid_device(d)) return CUDA_ERROR_INVALID_DEVICE;
  *v = 1;
  return CUDA_SUCCESS;
}
CUresult DeviceGetName(char* name, int len, CUdevice d) {
  if (!valid_device(d)) return CUDA_ERROR_INVALID_DEVICE;
  std::snprintf(name, static_cast<std::size_t>(len), "Fake GPU %d", d);
  return CUDA_SUCCESS;
}
CUresult DeviceGetUuid(CUuuid* uuid, CUdevice d) {
  if (!valid_device(d)) return CUDA_ERROR_INVALID_DEVICE;
  const std::string& text = state().config.devices[static_cast<std::size_t>(d)].uuid;
  std::memset(uuid->bytes, 0, sizeof uuid->bytes);
  std::size_t k = 0;
  for (std::size_t i = 4; i + 1 < text.size() && k < 16; ++i) {  // skip "GPU-"
    if (text[i] == '-') continue;
    unsigned v = 0;
    std::sscanf(text.c_str() + i, "%2x", &v);
    uuid->bytes[k++] = static_cast<char>(v);
    ++i;
  }
  return CUDA_SUCCESS;
}
CUresult DeviceGetPCIBusId(char* bus, int len, CUdevice d) {
  if (!valid_device(d)) return CUDA_ERROR_INVALID_DEVICE;
  std::snprintf(bus, static_cast<std::size_t>(len), "%s",
                state().config.devices[static_cast<std::size_t>(d)].pci_bus_id.c_str());
  return CUDA_SUCCESS;
}
CUresult PrimaryCtxRetain(CUcontext* ctx, CUdevice d) {
  if (!valid_device(d)) return CUDA_ERROR_INVALID_DEVICE;
  *ctx = reinterpret_cast<CUcontext>(&primary_ctx_token);
  return CUDA_SUCCESS;
}
CUresult PrimaryCtxRelease(CUdevice) {
  return CUDA_SUCCESS;
}
CUresult CtxSetCurrent(CUcontext ctx) {
  current_ctx = ctx;
  return CUDA_SUCCESS;
}
CUresult CtxGetCurrent(CUcontext* ctx) {
  *ctx = current_ctx;
  return CUDA_SUCCESS;
}
CUresult GetGranularity(size_t* g, const CUmemAllocationProp*, CUmemAllocationGranularity_flags) {
  *g = kGranularity;
  return CUDA_SUCCESS;
}
CUresult MemCreate(CUmemGenericAllocationHandle* h, size_t bytes, const CUmemAllocationProp* prop,
                   unsigned long long) {
  State& s = state();
  std::lock_guard lock(s.mu);
  if (bytes == 0 || bytes % kGranularity != 0) return CUDA_ERROR_INVALID_VALUE;
  auto a = std::make_shared<Allocation>();
  a->bytes = bytes;
  a->device = prop->location.id;
  a->data.assign(bytes, 0);
  *h = s.next_handle++;
  s.handles[*h] = std::move(a);
  ++counters().mem_create;
  return CUDA_SUCCESS;
}
CUresult MemRelease(CUmemGenericAllocationHandle h) {
  State& s = state();
  std::lock_guard lock(s.mu);
  ++counters().mem_release;
  if (s.handles.erase(h) == 0) {
    ++counters().bad_release;
    return CUDA_ERROR_INVALID_VALUE;
  }
  return CUDA_SUCCESS;
}
CUresult Export(void* out, CUmemGenericAllocationHandle h, CUmemAllocationHandleType,
                unsigned long long) {
  State& s = state();
  std::lock_guard lock(s.mu);
  auto it = s.handles.find(h);
  if (it == s.handles.end()) return CUDA_ERROR_INVALID_VALUE;
  const int fd = memfd_create("fake-cuda-export", MFD_CLOEXEC);
  struct stat st {};
  if (fd < 0 || fstat(fd, &st) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
  s.exported[st.st_ino] = it->second;
  *static_cast<int*>(out) = fd;
  return CUDA_SUCCESS;
}
CUresult Import(CUmemGenericAllocationHandle* h, void* os_handle, CUmemAllocationHandleType) {
  State& s = state();
  std::lock_guard lock(s.mu);
  ++counters().import;
  const int fd = static_cast<int>(reinterpret_cast<std::uintptr_t>(os_handle));
  struct stat st {};
  if (fstat(fd, &st) != 0) return CUDA_ERROR_INVALID_VALUE;
  auto it = s.exported.find(st.st_ino);
  if (it == s.exported.end()) return CUDA_ERROR_INVALID_VALUE;
  if (s.config.reimport_returns_live_handle) {
    for (const auto& [handle, alloc] : s.handles) {
      if (alloc == it->second) {
        *h = handle;
        return CUDA_SUCCESS;
      }
    }
  }
  *h = s.next_handle++;
  s.handles[*h] = it->second;
  return CUDA_SUCCESS;
}
CUresult PropsFromHandle(CUmemAllocationProp* prop, CUmemGenericAllocationHandle h) {
  State& s = state();
  std::lock_guard lock(s.mu);
  auto it = s.handles.find(h);
  if (it == s.handles.end()) return CUDA_ERROR_INVALID_VALUE;
  *prop = {};
  prop->type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop->location.id = it->second->device;
  return CUDA_SUCCESS;
}
CUresult AddressReserve(CUdeviceptr* p, size_t bytes, size_t, CUdeviceptr, unsigned long long) {
  State& s = state();
  std::lock_guard lock(s.mu);
  ++counters().address_reserve;
  *p = s.next_va;
  s.next_va += bytes + kGranularity;  // a gap between reservations
  s.reservations[*p] = bytes;
  return CUDA_SUCCESS;
}
CUresult AddressFree(CUdeviceptr p, size_t) {
  State& s = state();
  std::lock_guard lock(s.mu);
  return s.reservations.erase(p) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
CUresult MemMap(CUdeviceptr p, size_t bytes, size_t, CUmemGenericAllocationHandle h,
                unsigned long long) {
  State& s = state();
  std::lock_guard lock(s.mu);
  ++counters().map;
  auto it = s.handles.find(h);
  if (it == s.handles.end() || bytes > it->second->bytes) return CUDA_ERROR_INVALID_VALUE;
  s.mappings[p] = Mapping{bytes, it->second, CU_MEM_ACCESS_FLAGS_PROT_NONE};
  return CUDA_SUCCESS;
}
CUresult MemUnmap(CUdeviceptr p, size_t bytes) {
  State& s = state();
  std::lock_guard lock(s.mu);
  ++counters().unmap;
  s.events.push_back("unmap");
  for (CUdeviceptr at = p; at < p + bytes;) {
    auto it = s.mappings.find(at);
    if (it == s.mappings.end()) return CUDA_ERROR_INVALID_VALUE;
    at += it->second.bytes;
    s.mappings.erase(it);
  }
  return CUDA_SUCCESS;
}
CUresult SetAccess(CUdeviceptr p, size_t bytes, const CUmemAccessDesc* desc, size_t count) {
  State& s = state();
  std::lock_guard lock(s.mu);
  ++counters().set_access;
  if (count != 1) return CUDA_ERROR_INVALID_VALUE;
  s.access.push_back(AccessCall{p, bytes, static_cast<unsigned long long>(desc->flags)});
  const CUresult r = desc->flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE
                         ? s.config.set_access_rw_result
                         : s.config.set_access_restricted_result;
  if (r != CUDA_SUCCESS) return r;
  for (CUdeviceptr at = p; at < p + bytes;) {
    auto it = s.mappings.find(at);
    if (it == s.mappings.end()) return CUDA_ERROR_INVALID_VALUE;
    it->second.flags = desc->flags;
    at += it->second.bytes;
  }
  return CUDA_SUCCESS;
}
CUresult GetAccess(unsigned long long* flags, const CUmemLocation*, CUdeviceptr p) {
  State& s = state();
  std::lock_guard lock(s.mu);
  std::size_t offset = 0;
  Mapping* m = find_mapping(s, p, 1, &offset);
  if (m == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *flags = m->flags;
  return CUDA_SUCCESS;
}
// Runs the test's hook outside the lock, then copies under it.
CUresult copy(void* host, CUdeviceptr dev, std::size_t bytes, bool to_device) {
  State& s = state();
  std::function<void()> hook;
  {
    std::lock_guard lock(s.mu);
    s.events.push_back("copy-begin");
    hook = s.config.during_copy;
  }
  if (hook) hook();
  std::lock_guard lock(s.mu);
  ++counters().copies;
  std::size_t offset = 0;
  Mapping* m = find_mapping(s, dev, bytes, &offset);
  s.events.push_back("copy-end");
  if (m == nullptr) return CUDA_ERROR_ILLEGAL_ADDRESS;  // a real DMA would fault here
  unsigned char* at = m->alloc->data.data() + offset;
  if (to_device) {
    std::memcpy(at, host, bytes);
  } else {
    std::memcpy(host, at, bytes);
  }
  return CUDA_SUCCESS;
}
CUresult HtoD(CUdeviceptr dst, const void* src, size_t bytes) {
  return copy(const_cast<void*>(src), dst, bytes, true);
}
CUresult DtoH(void* dst, CUdeviceptr src, size_t bytes) {
  return copy(dst, src, bytes, false);
}
CUresult StreamSynchronize(CUstream) {
  return CUDA_SUCCESS;
}

}  // namespace

void reset(Config config) {
  State& s = state();
  {
    std::lock_guard lock(s.mu);
    s.config = std::move(config);
    s.handles.clear();
    s.exported.clear();
    s.reservations.clear();
    s.mappings.clear();
    s.access.clear();
    s.events.clear();
  }
  Counts& c = counters();
  for (std::atomic<int>* a : {&c.mem_create, &c.mem_release, &c.bad_release, &c.import,
                              &c.address_reserve, &c.map, &c.unmap, &c.set_access, &c.copies}) {
    *a = 0;
  }
  cuda::DriverApi api;
  api.pfn_cuGetErrorName = &GetErrorName;
  api.pfn_cuGetErrorString = &GetErrorString;
  api.pfn_cuInit = &Init;
  api.pfn_cuDriverGetVersion = &DriverGetVersion;
  api.pfn_cuDeviceGetCount = &DeviceGetCount;
  api.pfn_cuDeviceGet = &DeviceGet;
  api.pfn_cuDeviceGetAttribute = &DeviceGetAttribute;
  api.pfn_cuDeviceGetName = &DeviceGetName;
  api.pfn_cuDeviceGetUuid = &DeviceGetUuid;
  api.pfn_cuDeviceGetPCIBusId = &DeviceGetPCIBusId;
  api.pfn_cuDevicePrimaryCtxRetain = &PrimaryCtxRetain;
  api.pfn_cuDevicePrimaryCtxRelease = &PrimaryCtxRelease;
  api.pfn_cuCtxSetCurrent = &CtxSetCurrent;
  api.pfn_cuCtxGetCurrent = &CtxGetCurrent;
  api.pfn_cuMemGetAllocationGranularity = &GetGranularity;
  api.pfn_cuMemCreate = &MemCreate;
  api.pfn_cuMemRelease = &MemRelease;
  api.pfn_cuMemExportToShareableHandle = &Export;
  api.pfn_cuMemImportFromShareableHandle = &Import;
  api.pfn_cuMemAddressReserve = &AddressReserve;
  api.pfn_cuMemAddressFree = &AddressFree;
  api.pfn_cuMemMap = &MemMap;
  api.pfn_cuMemUnmap = &MemUnmap;
  api.pfn_cuMemSetAccess = &SetAccess;
  api.pfn_cuMemGetAccess = &GetAccess;
  api.pfn_cuMemcpyHtoD = &HtoD;
  api.pfn_cuMemcpyDtoH = &DtoH;
  api.pfn_cuStreamSynchronize = &StreamSynchronize;
  api.pfn_cuMemGetAllocationPropertiesFromHandle = &PropsFromHandle;
  api.driver_version = 13000;
  cuda::install_driver_for_testing(api);
}

Counts& counts() {
  return counters();
}

std::vector<AccessCall> access_calls() {
  std::lock_guard lock(state().mu);
  return state().access;
}

std::size_t live_handles() {
  std::lock_guard lock(state().mu);
  return state().handles.size();
}

std::vector<std::string> events() {
  std::lock_guard lock(state().mu);
  return state().events;
}

}  // namespace pf::vmm::fake_cuda

// gpu_probe: what the CUDA driver of this machine does with the VMM calls the cuda backend
// makes (docs/cuda.md), measured directly through the run-time-loaded driver table
// (vmm/cuda_driver.h), printed as one JSON object on stdout. perf/gpu_check.sh runs it.
//
//   gpu_probe [--device N] [--reps R] [--out FILE]
//
// On device N (default 0), with an exportable pinned allocation (POSIX fd handles, exactly
// the backend's allocation properties):
//  granularity      cuMemGetAllocationGranularity, MINIMUM and RECOMMENDED, in bytes.
//  import           export a chunk to an fd and import that fd in this same process: does
//                   the driver return the exporting handle itself ("same handle") or a new
//                   one ("new handle"), and does each cuMemRelease after it succeed.
//  access_modes     cuMemSetAccess with PROT_READWRITE, PROT_READ and PROT_NONE, each on a
//                   fresh mapping ("fresh") and on a mapping that already has read-write
//                   access ("after_read_write"): accepted, or the error the driver returns.
//  latency_us       cuMemSetAccess (read-write) and cuMemUnmap of one mapping, median, p99,
//                   min and max over R reps (default 50), for a mapping of one granule and
//                   of 32 granules (the pool's chunk sizes).
//
// Exit status: 0 when every probe ran (a refused access mode is a finding, not a failure);
// 1 when a probe failed (the JSON says which, "status": "error"); 3 when there is no
// usable driver or device ("status": "no_gpu", with the reason): the path a machine
// without a GPU takes, so a rehearsal can prove the binary starts. 2: bad arguments.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "perf/gpu_tool.h"
#include "vmm/cuda_driver.h"

namespace {

using pf::perf::kExitFailed;
using pf::perf::kExitNoGpu;
using pf::perf::kExitUsage;
using Json = nlohmann::json;
namespace cu = pf::vmm::cuda;
using Clock = std::chrono::steady_clock;

// "CUDA_ERROR_X (description)"; empty for success.
std::string err(CUresult r) {
  return r == CUDA_SUCCESS ? std::string() : cu::result_text(r);
}

// A probe failure: carries the JSON written so far out of the probe.
struct ProbeError {
  std::string what;
};

void check(CUresult r, const std::string& what) {
  if (r != CUDA_SUCCESS) throw ProbeError{what + " failed: " + cu::result_text(r)};
}

Json stats_us(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  const auto at = [&](double p) {
    return us[std::min(us.size() - 1, static_cast<std::size_t>(p * (us.size() - 1) + 0.5))];
  };
  return Json{{"median", at(0.5)},
              {"p99", at(0.99)},
              {"min", us.front()},
              {"max", us.back()},
              {"samples", us.size()}};
}

double us_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

// The device's context is current on this thread for the probe's whole life.
class Probe {
 public:
  explicit Probe(int ordinal) : ordinal_(ordinal) {
    prop_.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop_.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    prop_.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop_.location.id = ordinal;
  }

  Json granularity() {
    check(
        PF_CU_CALL(cuMemGetAllocationGranularity(&min_, &prop_, CU_MEM_ALLOC_GRANULARITY_MINIMUM)),
        "cuMemGetAllocationGranularity(MINIMUM)");
    std::size_t rec = 0;
    check(PF_CU_CALL(
              cuMemGetAllocationGranularity(&rec, &prop_, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED)),
          "cuMemGetAllocationGranularity(RECOMMENDED)");
    if (min_ == 0) throw ProbeError{"the driver reported a minimum granularity of 0"};
    return Json{{"minimum", min_}, {"recommended", rec}};
  }

  Json import_same_process() {
    CUmemGenericAllocationHandle h = 0;
    check(PF_CU_CALL(cuMemCreate(&h, min_, &prop_, 0)), "cuMemCreate");
    int fd = -1;
    const CUresult ex = PF_CU_CALL(
        cuMemExportToShareableHandle(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
    if (ex != CUDA_SUCCESS) {
      PF_CU_CALL(cuMemRelease(h));
      throw ProbeError{"cuMemExportToShareableHandle failed: " + err(ex)};
    }
    CUmemGenericAllocationHandle imported = 0;
    const CUresult im = PF_CU_CALL(cuMemImportFromShareableHandle(
        &imported, reinterpret_cast<void*>(static_cast<std::uintptr_t>(fd)),
        CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));
    ::close(fd);
    Json j;
    j["exported_handle"] = h;
    if (im != CUDA_SUCCESS) {
      PF_CU_CALL(cuMemRelease(h));
      j["result"] = "import failed";
      j["import_error"] = err(im);
      return j;
    }
    j["imported_handle"] = imported;
    j["same_handle"] = imported == h;
    j["result"] = imported == h ? "same handle" : "new handle";
    // One release per successful create/import, as the backend does; whether the second
    // succeeds for a same-handle import says whether the import took its own reference.
    const CUresult r1 = PF_CU_CALL(cuMemRelease(imported));
    const CUresult r2 = PF_CU_CALL(cuMemRelease(h));
    j["release_imported"] = r1 == CUDA_SUCCESS ? "ok" : err(r1);
    j["release_exported"] = r2 == CUDA_SUCCESS ? "ok" : err(r2);
    return j;
  }

  Json access_modes() {
    struct Mode {
      const char* name;
      CUmemAccess_flags flags;
    };
    const Mode modes[] = {{"read_write", CU_MEM_ACCESS_FLAGS_PROT_READWRITE},
                          {"read", CU_MEM_ACCESS_FLAGS_PROT_READ},
                          {"none", CU_MEM_ACCESS_FLAGS_PROT_NONE}};
    Json j;
    Mapping m(*this, 1);
    for (const Mode& mode : modes) {
      for (const bool after_rw : {false, true}) {
        m.map();
        if (after_rw) check(m.set_access(CU_MEM_ACCESS_FLAGS_PROT_READWRITE), "cuMemSetAccess(RW)");
        const CUresult r = m.set_access(mode.flags);
        Json one{{"accepted", r == CUDA_SUCCESS}};
        if (r != CUDA_SUCCESS) one["error"] = err(r);
        j[mode.name][after_rw ? "after_read_write" : "fresh"] = one;
        check(m.unmap(), "cuMemUnmap");
      }
    }
    return j;
  }

  Json latency(int reps) {
    Json j;
    for (const std::size_t granules : {std::size_t{1}, std::size_t{32}}) {
      Mapping m(*this, granules);
      std::vector<double> set_access, unmap;
      for (int r = 0; r < reps; ++r) {
        m.map();
        const Clock::time_point t0 = Clock::now();
        check(m.set_access(CU_MEM_ACCESS_FLAGS_PROT_READWRITE), "cuMemSetAccess(RW)");
        set_access.push_back(us_since(t0));
        const Clock::time_point t1 = Clock::now();
        check(m.unmap(), "cuMemUnmap");
        unmap.push_back(us_since(t1));
      }
      const std::string key = std::to_string(granules * min_) + "_bytes";
      j["set_access_read_write"][key] = stats_us(set_access);
      j["unmap"][key] = stats_us(unmap);
    }
    return j;
  }

 private:
  // One physical allocation and one reservation of `granules` granules, released in the
  // destructor; map()/unmap() map the whole allocation at the reservation's start.
  class Mapping {
   public:
    Mapping(Probe& p, std::size_t granules) : p_(p), bytes_(granules * p.min_) {
      check(PF_CU_CALL(cuMemCreate(&handle_, bytes_, &p_.prop_, 0)), "cuMemCreate");
      const CUresult r = PF_CU_CALL(cuMemAddressReserve(&va_, bytes_, p_.min_, 0, 0));
      if (r != CUDA_SUCCESS) {
        PF_CU_CALL(cuMemRelease(handle_));
        throw ProbeError{"cuMemAddressReserve failed: " + err(r)};
      }
    }
    ~Mapping() {
      if (mapped_) PF_CU_CALL(cuMemUnmap(va_, bytes_));
      PF_CU_CALL(cuMemAddressFree(va_, bytes_));
      PF_CU_CALL(cuMemRelease(handle_));
    }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;

    void map() {
      check(PF_CU_CALL(cuMemMap(va_, bytes_, 0, handle_, 0)), "cuMemMap");
      mapped_ = true;
    }
    CUresult set_access(CUmemAccess_flags flags) {
      CUmemAccessDesc d = {};
      d.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
      d.location.id = p_.ordinal_;
      d.flags = flags;
      return PF_CU_CALL(cuMemSetAccess(va_, bytes_, &d, 1));
    }
    CUresult unmap() {
      const CUresult r = PF_CU_CALL(cuMemUnmap(va_, bytes_));
      if (r == CUDA_SUCCESS) mapped_ = false;
      return r;
    }

   private:
    Probe& p_;
    const std::size_t bytes_;
    CUmemGenericAllocationHandle handle_ = 0;
    CUdeviceptr va_ = 0;
    bool mapped_ = false;
  };

  const int ordinal_;
  CUmemAllocationProp prop_ = {};
  std::size_t min_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  int ordinal = 0;
  int reps = 50;
  std::string out;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--device" && has_value) {
      ordinal = std::atoi(argv[++i]);
    } else if (a == "--reps" && has_value) {
      reps = std::atoi(argv[++i]);
    } else if (a == "--out" && has_value) {
      out = argv[++i];
    } else if (a == "-h" || a == "--help") {
      std::puts(
          "gpu_probe [--device N] [--reps R] [--out FILE]: the driver's VMM behaviour as "
          "JSON (exit 0 ok, 1 a probe failed, 3 no GPU)");
      return 0;
    } else {
      std::fprintf(stderr, "gpu_probe: bad argument %s (--help)\n", a.c_str());
      return kExitUsage;
    }
  }
  if (reps <= 0 || ordinal < 0) {
    std::fprintf(stderr, "gpu_probe: --reps must be positive and --device non-negative\n");
    return kExitUsage;
  }

  Json j{{"program", "gpu_probe"}, {"device_ordinal", ordinal}, {"reps", reps}};
  const auto no_gpu = [&](const std::string& why) {
    j["status"] = "no_gpu";
    j["error"] = why;
    pf::perf::emit_json("gpu_probe", j, out);
    return kExitNoGpu;
  };
  if (pf::Status s = cu::load_driver(); !s.is_ok()) return no_gpu(s.to_string());
  j["driver_version"] = cu::api().driver_version;
  const CUresult init = PF_CU_CALL(cuInit(0));
  if (init != CUDA_SUCCESS) return no_gpu("cuInit failed: " + err(init));
  int count = 0;
  if (const CUresult r = PF_CU_CALL(cuDeviceGetCount(&count)); r != CUDA_SUCCESS)
    return no_gpu("cuDeviceGetCount failed: " + err(r));
  if (ordinal >= count)
    return no_gpu("no CUDA device " + std::to_string(ordinal) + " (found " + std::to_string(count) +
                  ")");

  CUdevice dev = 0;
  CUcontext ctx = nullptr;
  try {
    check(PF_CU_CALL(cuDeviceGet(&dev, ordinal)), "cuDeviceGet");
    char name[256] = {};
    check(PF_CU_CALL(cuDeviceGetName(name, sizeof name, dev)), "cuDeviceGetName");
    j["device_name"] = name;
    check(PF_CU_CALL(cuDevicePrimaryCtxRetain(&ctx, dev)), "cuDevicePrimaryCtxRetain");
    check(PF_CU_CALL(cuCtxSetCurrent(ctx)), "cuCtxSetCurrent");
    Probe p(ordinal);
    j["granularity"] = p.granularity();
    j["import_same_process"] = p.import_same_process();
    j["access_modes"] = p.access_modes();
    j["latency_us"] = p.latency(reps);
    j["status"] = "ok";
  } catch (const ProbeError& e) {
    j["status"] = "error";
    j["error"] = e.what;
  }
  if (ctx != nullptr) {
    PF_CU_CALL(cuCtxSetCurrent(nullptr));
    PF_CU_CALL(cuDevicePrimaryCtxRelease(dev));
  }
  pf::perf::emit_json("gpu_probe", j, out);
  return j["status"] == "ok" ? 0 : kExitFailed;
}

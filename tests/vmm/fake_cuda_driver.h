// A fake CUDA driver for tests on machines without a GPU: test doubles for every entry
// point vmm/cuda_driver.h resolves, installed with cuda::install_driver_for_testing().
//
// It keeps allocations, handles, reservations, mappings and access in host memory (each
// allocation has a host buffer, so copies through mapped addresses move real bytes), counts
// calls, and lets a test choose behaviours the real driver may show: whether importing an
// fd in the process that holds the allocation returns the live handle, what cuMemSetAccess
// answers, which devices (UUID, PCI bus id) are visible. cuMemRelease of a handle that is
// not live answers CUDA_ERROR_INVALID_VALUE, so a double release is seen.
//
// Process-wide and not thread-safe except where noted: one test at a time configures it
// (reset()), then drives the backend.
#pragma once

#include <cuda.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace pf::vmm::fake_cuda {

struct Device {
  std::string uuid;  // "GPU-..." text; parsed into CUuuid bytes
  std::string pci_bus_id;
};

struct AccessCall {
  CUdeviceptr va = 0;
  std::size_t bytes = 0;
  unsigned long long flags = 0;
};

struct Config {
  std::vector<Device> devices;
  // Importing an fd of an allocation that has a live handle in this process returns that
  // handle (no new reference) instead of a new one.
  bool reimport_returns_live_handle = false;
  // What cuMemSetAccess answers for PROT_NONE / PROT_READ requests (READWRITE always
  // succeeds unless set_access_rw_result says otherwise).
  CUresult set_access_restricted_result = CUDA_SUCCESS;
  CUresult set_access_rw_result = CUDA_SUCCESS;
  // Runs inside cuMemcpyHtoD / cuMemcpyDtoH before the bytes move (may block); any thread.
  std::function<void()> during_copy;
};

// Counters; atomics because copies may run on other threads.
struct Counts {
  std::atomic<int> mem_create{0};
  std::atomic<int> mem_release{0};
  std::atomic<int> bad_release{0};  // cuMemRelease of a handle that is not live
  std::atomic<int> import{0};
  std::atomic<int> address_reserve{0};
  std::atomic<int> map{0};
  std::atomic<int> unmap{0};
  std::atomic<int> set_access{0};
  std::atomic<int> copies{0};
};

// Installs the fake as the process's driver (once) and resets its state to `config`.
void reset(Config config);
Counts& counts();
// Every cuMemSetAccess since reset(), in order.
std::vector<AccessCall> access_calls();
// Live driver handles (one per create or non-deduplicated import, until released).
std::size_t live_handles();
// Order of events ("copy-begin", "copy-end", "unmap"), for race tests. Thread-safe.
std::vector<std::string> events();

}  // namespace pf::vmm::fake_cuda

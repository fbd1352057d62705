// The fixture of the suites that run over every PageKernels implementation: memory of the
// kind an implementation serves, the host reference, and the skip (with
// make_cuda_kernels()'s reason) of an implementation this machine cannot run (no CUDA build,
// no driver, no GPU). Parameter: "host" or "cuda".
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernels/page_kernels.h"

#if defined(PF_HAVE_CUDA)
#include <cuda_runtime.h>
#endif

namespace pf::kernels {

// Memory of the kind an implementation serves, plus host<->memory copies for the test.
class TestMemory {
 public:
  virtual ~TestMemory() = default;
  virtual std::uint8_t* alloc(std::size_t bytes) = 0;
  virtual void upload(void* dst, const void* src, std::size_t bytes) = 0;
  virtual void download(void* dst, const void* src, std::size_t bytes) = 0;
};

class HostMemory final : public TestMemory {
 public:
  std::uint8_t* alloc(std::size_t bytes) override {
    blocks_.push_back(std::make_unique<std::uint8_t[]>(bytes));
    return blocks_.back().get();
  }
  void upload(void* dst, const void* src, std::size_t bytes) override {
    std::memcpy(dst, src, bytes);
  }
  void download(void* dst, const void* src, std::size_t bytes) override {
    std::memcpy(dst, src, bytes);
  }

 private:
  std::vector<std::unique_ptr<std::uint8_t[]>> blocks_;
};

#if defined(PF_HAVE_CUDA)
class CudaMemory final : public TestMemory {
 public:
  ~CudaMemory() override {
    for (void* p : blocks_) cudaFree(p);
  }
  std::uint8_t* alloc(std::size_t bytes) override {
    void* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, bytes), cudaSuccess);
    blocks_.push_back(p);
    return static_cast<std::uint8_t*>(p);
  }
  void upload(void* dst, const void* src, std::size_t bytes) override {
    EXPECT_EQ(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), cudaSuccess);
  }
  void download(void* dst, const void* src, std::size_t bytes) override {
    EXPECT_EQ(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  }

 private:
  std::vector<void*> blocks_;
};
#endif

class AllImpls : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    host_ = make_host_kernels();
    if (GetParam() == "host") {
      impl_ = make_host_kernels();
      mem_ = std::make_unique<HostMemory>();
      return;
    }
    auto k = make_cuda_kernels(0);
    if (!k.is_ok()) GTEST_SKIP() << k.status().message();
#if defined(PF_HAVE_CUDA)
    impl_ = std::move(k).value();
    mem_ = std::make_unique<CudaMemory>();
#else
    FAIL() << "make_cuda_kernels succeeded in a build without CUDA";
#endif
  }

  // A copy of `bytes` in the implementation's memory.
  std::uint8_t* place(const std::vector<std::uint8_t>& bytes) {
    std::uint8_t* p = mem_->alloc(bytes.size());
    mem_->upload(p, bytes.data(), bytes.size());
    return p;
  }
  std::vector<std::uint8_t> fetch(const std::uint8_t* p, std::size_t bytes) {
    std::vector<std::uint8_t> out(bytes);
    mem_->download(out.data(), p, bytes);
    return out;
  }

  std::unique_ptr<PageKernels> host_;  // the reference
  std::unique_ptr<PageKernels> impl_;  // under test
  std::unique_ptr<TestMemory> mem_;
};

}  // namespace pf::kernels

#include "kernels/host_thread_pool.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

namespace pf::kernels {

struct HostThreadPool::Job {
  std::size_t n = 0;
  const std::function<void(std::size_t)>* fn = nullptr;  // the caller's; valid until done
  std::atomic<std::size_t> next{0};                      // the next unclaimed item
  std::atomic<std::size_t> done{0};                      // items whose fn returned
  std::mutex mu;
  std::condition_variable finished;
};

HostThreadPool::HostThreadPool(unsigned threads) : owner_pid_(static_cast<int>(::getpid())) {
  const unsigned workers = threads > 1 ? threads - 1 : 0;
  workers_.reserve(workers);
  for (unsigned i = 0; i < workers; ++i) workers_.emplace_back([this] { worker_loop(); });
}

HostThreadPool::~HostThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void HostThreadPool::run_items(Job& job) {
  // fn is only touched after a successful claim: the caller cannot return (and destroy fn)
  // before every claimed item is done.
  for (std::size_t i = job.next.fetch_add(1); i < job.n; i = job.next.fetch_add(1)) {
    (*job.fn)(i);
    if (job.done.fetch_add(1) + 1 == job.n) {
      std::lock_guard<std::mutex> lock(job.mu);
      job.finished.notify_all();
    }
  }
}

void HostThreadPool::worker_loop() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = queue_.front();
      // Every item claimed: nobody else needs to find this job here.
      if (job->next.load() >= job->n) {
        queue_.pop_front();
        continue;
      }
    }
    run_items(*job);
  }
}

thread_local bool HostThreadPool::serial_on_this_thread = false;

HostThreadPool::SerialScope::SerialScope() : previous_(serial_on_this_thread) {
  serial_on_this_thread = true;
}

HostThreadPool::SerialScope::~SerialScope() {
  serial_on_this_thread = previous_;
}

void HostThreadPool::parallel_for(std::size_t n, const std::function<void(std::size_t)>& fn) {
  if (n == 0) return;
  if (workers_.empty() || n == 1 || serial_on_this_thread || ::getpid() != owner_pid_) {
    for (std::size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  auto job = std::make_shared<Job>();
  job->n = n;
  job->fn = &fn;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(job);
  }
  // More workers than items would only wake to find nothing left.
  if (n - 1 >= workers_.size()) {
    wake_.notify_all();
  } else {
    for (std::size_t i = 0; i + 1 < n; ++i) wake_.notify_one();
  }
  run_items(*job);
  {
    std::unique_lock<std::mutex> lock(job->mu);
    job->finished.wait(lock, [&] { return job->done.load() == n; });
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find(queue_.begin(), queue_.end(), job);
  if (it != queue_.end()) queue_.erase(it);
}

unsigned HostThreadPool::default_threads() {
  if (const char* env = std::getenv("PF_HOST_THREADS"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    const unsigned long v = std::strtoul(env, &end, 10);
    if (end != nullptr && *end == '\0' && v >= 1 && v <= 256) return static_cast<unsigned>(v);
  }
  return std::clamp(std::thread::hardware_concurrency(), 1u, kDefaultMaxThreads);
}

HostThreadPool& HostThreadPool::shared() {
  // Leaked on purpose: worker threads must not be joined during static destruction, when a
  // late digest (another static's destructor) could still want them.
  static HostThreadPool* pool = new HostThreadPool(default_threads());
  return *pool;
}

}  // namespace pf::kernels

#include "runtime/store_blobs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <map>

#include "base/hex.h"
#include "base/unique_fd.h"

namespace pf::rt {

std::string BlobKey::hex() const {
  return hex_string(k.bytes.data(), 32) + hex_string(v.bytes.data(), 32) + "-" +
         std::to_string(fill);
}

}  // namespace pf::rt

namespace pf::rt::store {

namespace {

constexpr std::size_t kDirectAlign = 4096;

bool aligned(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % kDirectAlign == 0;
}

// A per-thread 4 KiB aligned buffer of at least `bytes`, reused across calls.
std::byte* bounce_buffer(std::size_t bytes) {
  struct Buffer {
    std::byte* p = nullptr;
    std::size_t bytes = 0;
    ~Buffer() { std::free(p); }
  };
  thread_local Buffer buf;
  if (buf.bytes < bytes) {
    std::free(buf.p);
    const std::size_t rounded = (bytes + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
    buf.p = static_cast<std::byte*>(std::aligned_alloc(kDirectAlign, rounded));
    buf.bytes = buf.p ? rounded : 0;
  }
  return buf.p;
}

Status fsync_dir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return PF_ERRNO("open directory " + dir);
  if (::fsync(fd.get()) != 0) return PF_ERRNO("fsync directory " + dir);
  return Status::ok();
}

Status make_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return PF_ERRNO("mkdir " + dir);
  return Status::ok();
}

// Writes all of [data, data + n) at offset 0; errno preserved on failure (-1).
int pwrite_all(int fd, const std::byte* data, std::size_t n) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t w = ::pwrite(fd, data + done, n - done, static_cast<off_t>(done));
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (w == 0) {
      errno = EIO;
      return -1;
    }
    done += static_cast<std::size_t>(w);
  }
  return 0;
}

}  // namespace

// --- IoPool -------------------------------------------------------------------------------

struct IoPool::Job {
  const std::function<void(std::size_t)>* fn;
  std::size_t n;
  std::size_t next = 0;  // next index to claim (under mu_)
  std::size_t done = 0;  // indices finished (under mu_)
};

IoPool::IoPool(std::size_t threads) {
  for (std::size_t i = 1; i < threads; ++i) threads_.emplace_back([this] { worker(); });
}

IoPool::~IoPool() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void IoPool::run(std::size_t n, const std::function<void(std::size_t)>& fn) {
  if (n == 0) return;
  Job job{&fn, n};
  std::unique_lock lock(mu_);
  if (n > 1 && !threads_.empty()) {
    jobs_.push_back(&job);
    work_cv_.notify_all();
  }
  while (job.next < n) {
    const std::size_t i = job.next++;
    lock.unlock();
    fn(i);
    lock.lock();
    ++job.done;
  }
  std::erase(jobs_, &job);
  done_cv_.wait(lock, [&] { return job.done == n; });
}

void IoPool::worker() {
  std::unique_lock lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
    if (stop_) return;
    Job* job = jobs_.front();
    if (job->next >= job->n) {
      std::erase(jobs_, job);
      continue;
    }
    const std::size_t i = job->next++;
    lock.unlock();
    (*job->fn)(i);
    lock.lock();
    if (++job->done == job->n) done_cv_.notify_all();
  }
}

// --- names --------------------------------------------------------------------------------

bool parse_blob_name(std::string_view name, BlobKey* key) {
  if (name.size() < 130 || name[128] != '-') return false;
  if (!parse_hex(name.substr(0, 64), key->k.bytes.data(), 32) ||
      !parse_hex(name.substr(64, 64), key->v.bytes.data(), 32)) {
    return false;
  }
  const std::string_view fill = name.substr(129);
  if (fill.size() > 1 && fill[0] == '0') return false;  // one spelling per key
  auto [end, ec] = std::from_chars(fill.data(), fill.data() + fill.size(), key->fill);
  return ec == std::errc() && end == fill.data() + fill.size() && key->hex() == name;
}

// --- BlobFiles ----------------------------------------------------------------------------

BlobFiles::BlobFiles(std::string dir, const Geometry& g, std::size_t io_threads)
    : dir_(std::move(dir)),
      g_(g),
      page_bytes_(g.page_bytes()),
      direct_(g.page_bytes() % kDirectAlign == 0),
      pool_(io_threads) {}

Result<std::unique_ptr<BlobFiles>> BlobFiles::open(const std::string& dir, const Geometry& g,
                                                   std::size_t io_threads) {
  PF_TRY(make_dir(dir));
  PF_TRY(fsync_dir(dir));
  return std::unique_ptr<BlobFiles>(new BlobFiles(dir, g, io_threads));
}

std::string BlobFiles::path(const BlobKey& key) const {
  return dir_ + "/" + hex_string(key.k.bytes.data(), 1) + "/" + key.hex();
}

bool BlobFiles::direct_io() const {
  return direct_.load(std::memory_order_relaxed);
}

Status BlobFiles::write_one(const BlobWrite& blob) const {
  const std::string path = this->path(blob.key);
  const std::string tmp = path + ".tmp";
  // The bytes to write: the caller's when whole and aligned, else a zero-tailed copy.
  const std::byte* data = blob.bytes;
  const bool partial = blob.key.fill < g_.page_tokens;
  if (partial || (direct_io() && !aligned(data))) {
    std::byte* buf = bounce_buffer(page_bytes_);
    if (!buf) return PF_ERROR(Code::kOutOfMemory, "store: no memory for a bounce buffer");
    std::memcpy(buf, data, page_bytes_);
    const std::size_t tail = std::size_t{g_.page_tokens - blob.key.fill} * g_.token_bytes();
    for (std::uint32_t l = 0; partial && l < g_.layers; ++l) {
      for (Half h : {Half::kK, Half::kV})
        std::memset(buf + g_.offset(l, h, blob.key.fill), 0, tail);
    }
    data = buf;
  }
  bool made_dir = false;
  for (;;) {
    const bool direct = direct_io() && aligned(data);
    UniqueFd fd(::open(tmp.c_str(),
                       O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | (direct ? O_DIRECT : 0), 0600));
    if (!fd.valid() && errno == ENOENT && !made_dir) {  // the first blob of its fan-out dir
      made_dir = true;
      const std::string fan = dir_ + "/" + hex_string(blob.key.k.bytes.data(), 1);
      PF_TRY(make_dir(fan));
      PF_TRY(fsync_dir(dir_));
      continue;
    }
    if (!fd.valid() && direct && errno == EINVAL) {  // the file system refuses O_DIRECT
      direct_.store(false);
      continue;
    }
    if (!fd.valid()) return PF_ERRNO("store: create " + tmp);
    if (pwrite_all(fd.get(), data, page_bytes_) != 0) {
      const int err = errno;
      if (direct && err == EINVAL) {
        direct_.store(false);
        continue;
      }
      ::unlink(tmp.c_str());
      return PF_ERRNO_OF("store: write " + tmp, err);
    }
    if (::fdatasync(fd.get()) != 0) {
      const int err = errno;
      ::unlink(tmp.c_str());
      return PF_ERRNO_OF("store: fdatasync " + tmp, err);
    }
    break;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return PF_ERRNO_OF("store: rename " + tmp, err);
  }
  return Status::ok();
}

std::vector<Status> BlobFiles::write(std::span<const BlobWrite> blobs) {
  std::vector<Status> status(blobs.size());
  pool_.run(blobs.size(), [&](std::size_t i) { status[i] = write_one(blobs[i]); });
  // The renames are durable once their directories are: fsync each one once.
  std::map<std::string, Status> dirs;
  for (std::size_t i = 0; i < blobs.size(); ++i) {
    if (status[i].is_ok()) dirs[hex_string(blobs[i].key.k.bytes.data(), 1)] = Status::ok();
  }
  std::vector<std::map<std::string, Status>::iterator> dir_list;
  for (auto it = dirs.begin(); it != dirs.end(); ++it) dir_list.push_back(it);
  pool_.run(dir_list.size(), [&](std::size_t i) {
    dir_list[i]->second = fsync_dir(dir_ + "/" + dir_list[i]->first);
  });
  for (std::size_t i = 0; i < blobs.size(); ++i) {
    if (!status[i].is_ok()) continue;
    const Status& dir = dirs[hex_string(blobs[i].key.k.bytes.data(), 1)];
    if (!dir.is_ok()) status[i] = dir;
  }
  return status;
}

Status BlobFiles::read(const BlobKey& key, std::byte* dst) const {
  const std::string path = this->path(key);
  // O_DIRECT when the buffer allows it (pool pages do): one page-sized read from the
  // device, no copy through the page cache (the blob is checked and kept in the pool).
  bool direct = direct_io() && aligned(dst);
  for (;;) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | (direct ? O_DIRECT : 0)));
    if (!fd.valid() && direct && errno == EINVAL) {  // the file system refuses O_DIRECT
      direct = false;
      continue;
    }
    if (!fd.valid()) {
      if (errno == ENOENT)
        return PF_ERROR(Code::kNotFound, "store: blob " + key.hex() + " is not stored");
      return PF_ERRNO("store: open " + path);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return PF_ERRNO("store: stat " + path);
    if (static_cast<std::uint64_t>(st.st_size) != page_bytes_) {
      return PF_ERROR(Code::kDataCorrupt, "store: blob " + key.hex() + " file holds " +
                                              std::to_string(st.st_size) + " bytes, a page is " +
                                              std::to_string(page_bytes_) + " (truncated?)");
    }
    std::size_t done = 0;
    int err = 0;
    while (done < page_bytes_) {
      const ssize_t r = ::pread(fd.get(), dst + done, page_bytes_ - done, static_cast<off_t>(done));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) {
        err = errno;
        break;
      }
      if (r == 0) {
        return PF_ERROR(Code::kDataCorrupt, "store: blob " + key.hex() + " ended early");
      }
      done += static_cast<std::size_t>(r);
    }
    if (err == EINVAL && direct) {  // O_DIRECT refused at read time: read it buffered
      direct = false;
      continue;
    }
    if (err != 0) return PF_ERRNO_OF("store: read " + path, err);
    return Status::ok();
  }
}

Status BlobFiles::remove(const BlobKey& key) const {
  const std::string path = this->path(key);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return PF_ERRNO("store: unlink " + path);
  return Status::ok();
}

Result<std::size_t> BlobFiles::sweep(const std::function<bool(const BlobKey&)>& keep,
                                     std::uint64_t* kept_bytes) {
  // The fan-out directories that exist (made on a first write); anything else goes.
  std::vector<std::string> fans;
  {
    DIR* d = ::opendir(dir_.c_str());
    if (!d) return PF_ERRNO("store: opendir " + dir_);
    errno = 0;
    while (const dirent* e = ::readdir(d)) {
      const std::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      std::uint8_t b = 0;
      if ((e->d_type == DT_DIR || e->d_type == DT_UNKNOWN) && parse_hex(name, &b, 1) &&
          hex_string(&b, 1) == name) {
        fans.emplace_back(name);
      } else {
        const std::string p = dir_ + "/" + std::string(name);
        if (::unlink(p.c_str()) != 0 && errno != ENOENT) {
          const int err = errno;
          ::closedir(d);
          return PF_ERRNO_OF("store: unlink " + p, err);
        }
      }
    }
    const int err = errno;
    ::closedir(d);
    if (err != 0) return PF_ERRNO_OF("store: readdir " + dir_, err);
  }
  std::size_t removed = 0;
  for (const std::string& fan : fans) {
    const std::string sub = dir_ + "/" + fan;
    DIR* d = ::opendir(sub.c_str());
    if (!d) return PF_ERRNO("store: opendir " + sub);
    std::vector<std::string> doomed;
    errno = 0;
    while (const dirent* e = ::readdir(d)) {
      const std::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      BlobKey key;
      if (!parse_blob_name(name, &key) || name.substr(0, 2) != fan || !keep(key)) {
        doomed.emplace_back(name);
      } else {
        *kept_bytes += page_bytes_;
      }
    }
    const int err = errno;
    ::closedir(d);
    if (err != 0) return PF_ERRNO_OF("store: readdir " + sub, err);
    for (const std::string& name : doomed) {
      const std::string p = sub + "/" + name;
      if (::unlink(p.c_str()) != 0 && errno != ENOENT) return PF_ERRNO("store: unlink " + p);
      ++removed;
    }
  }
  return removed;
}

}  // namespace pf::rt::store

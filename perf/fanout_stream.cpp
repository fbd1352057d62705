#include "perf/fanout_stream.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "perf/fanout_units.h"

namespace pf::demo {
namespace {

constexpr char kMagic[8] = {'P', 'F', 'R', 'E', 'P', '0', '0', '1'};

class Writer {
 public:
  template <typename T>
  void put(const T& v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void put_string(const std::string& s) {
    put(static_cast<std::uint64_t>(s.size()));
    out_.append(s);
  }
  template <typename T>
  void put_vec(const std::vector<T>& v) {
    put(static_cast<std::uint64_t>(v.size()));
    out_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }
  const std::string& bytes() const { return out_; }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string in) : in_(std::move(in)) {}
  template <typename T>
  bool get(T* v) {
    if (in_.size() - pos_ < sizeof(T)) return false;
    std::memcpy(v, in_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool get_string(std::string* s) {
    std::uint64_t n = 0;
    if (!get(&n) || in_.size() - pos_ < n) return false;
    s->assign(in_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  template <typename T>
  bool get_vec(std::vector<T>* v, std::uint64_t max) {
    std::uint64_t n = 0;
    if (!get(&n) || n > max || (in_.size() - pos_) / sizeof(T) < n) return false;
    v->resize(n);
    std::memcpy(v->data(), in_.data() + pos_, n * sizeof(T));
    pos_ += n * sizeof(T);
    return true;
  }
  bool done() const { return pos_ == in_.size(); }

 private:
  std::string in_;
  std::size_t pos_ = 0;
};

void put_stream(Writer& w, const Stream& s) {
  w.put_vec(s.tokens);
  w.put_vec(s.logits);
  w.put(s.first_token_us);
  w.put(s.total_us);
}

bool get_stream(Reader& r, Stream* s, std::uint32_t vocab) {
  return r.get_vec(&s->tokens, 1u << 20) && r.get_vec(&s->logits, (1ull << 20) * vocab) &&
         s->logits.size() == s->tokens.size() * vocab && r.get(&s->first_token_us) &&
         r.get(&s->total_us);
}

}  // namespace

StreamSpec stream_spec(std::uint64_t base_seed, std::uint32_t index, std::uint32_t suffix_tokens,
                       std::uint32_t steps, float temperature, std::uint32_t vocab) {
  StreamSpec s;
  s.seed = base_seed * 1000003ull + 7919ull * (index + 1);
  s.suffix = engine::random_tokens(s.seed ^ 0x7461736bull, suffix_tokens, vocab);  // "task"
  s.steps = steps;
  s.temperature = temperature;
  return s;
}

Status decode(engine::Engine& engine, engine::PagedKv& kv, const StreamSpec& spec,
              const MakeRoom& make_room, Stream* out) {
  if (spec.suffix.empty() || spec.steps == 0) {
    return PF_ERROR(Code::kInvalidArgument, "decode: needs a suffix and at least one step");
  }
  const std::uint32_t vocab = engine.config().vocab;
  const Clock::time_point t0 = Clock::now();
  engine::Rng rng(spec.seed);
  std::vector<float> logits(vocab);
  out->tokens.clear();
  out->logits.clear();
  out->logits.reserve(std::size_t{spec.steps} * vocab);
  std::span<const rt::Token> feed = spec.suffix;
  rt::Token last = 0;
  for (std::uint32_t s = 0; s < spec.steps; ++s) {
    PF_TRY(make_room(feed));
    PF_TRY(engine.forward(kv, feed, logits));
    last = engine::sample(logits, spec.temperature, rng);
    out->tokens.push_back(last);
    out->logits.insert(out->logits.end(), logits.begin(), logits.end());
    if (s == 0) out->first_token_us = us_since(t0);
    feed = std::span<const rt::Token>(&last, 1);
  }
  out->total_us = us_since(t0);
  return Status::ok();
}

int first_difference(const Stream& a, const Stream& b, std::uint32_t vocab) {
  const std::size_t n = std::max(a.tokens.size(), b.tokens.size());
  for (std::size_t s = 0; s < n; ++s) {
    if (s >= a.tokens.size() || s >= b.tokens.size() || a.tokens[s] != b.tokens[s]) {
      return static_cast<int>(s);
    }
    if (std::memcmp(&a.logits[s * vocab], &b.logits[s * vocab], vocab * sizeof(float)) != 0) {
      return static_cast<int>(s);
    }
  }
  return -1;
}

Status write_report(const std::string& path, const ChildReport& r, std::uint32_t vocab) {
  Writer w;
  for (char c : kMagic) w.put(c);
  w.put(vocab);
  w.put(r.index);
  w.put(static_cast<std::uint8_t>(r.control ? 1 : 0));
  w.put_string(r.error);
  w.put(r.spawn_to_first_token_us);
  w.put(r.connect_us);
  w.put(r.adopt_us);
  w.put(r.pages_added);
  w.put(r.cow_copies);
  w.put(r.final_tokens);
  put_stream(w, r.stream);
  put_stream(w, r.altered);
  w.put(r.altered_page);
  w.put(r.altered_offset);
  // Write then rename: the parent never reads half a report.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(w.bytes().data(), static_cast<std::streamsize>(w.bytes().size()));
    if (!out) return PF_ERROR(Code::kSystem, "cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return PF_ERRNO("rename " + tmp);
  return Status::ok();
}

Result<ChildReport> read_report(const std::string& path, std::uint32_t vocab) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return PF_ERROR(Code::kNotFound, "no report at " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  Reader r(ss.str());
  char magic[8];
  for (char& c : magic) {
    if (!r.get(&c)) return PF_ERROR(Code::kProtocol, "truncated report " + path);
  }
  if (std::memcmp(magic, kMagic, 8) != 0) return PF_ERROR(Code::kProtocol, "bad report " + path);
  ChildReport out;
  std::uint32_t v = 0;
  std::uint8_t control = 0;
  const bool ok = r.get(&v) && v == vocab && r.get(&out.index) && r.get(&control) &&
                  r.get_string(&out.error) && r.get(&out.spawn_to_first_token_us) &&
                  r.get(&out.connect_us) && r.get(&out.adopt_us) && r.get(&out.pages_added) &&
                  r.get(&out.cow_copies) && r.get(&out.final_tokens) &&
                  get_stream(r, &out.stream, vocab) && get_stream(r, &out.altered, vocab) &&
                  r.get(&out.altered_page) && r.get(&out.altered_offset) && r.done();
  if (!ok) return PF_ERROR(Code::kProtocol, "malformed report " + path);
  out.control = control != 0;
  return out;
}

}  // namespace pf::demo

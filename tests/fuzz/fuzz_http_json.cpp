// libFuzzer target: the HTTP control port's request parsing (ipc/api_json.h). docs/fuzzing.md.
//
// Input: one selector byte, then text.
//  - selector = the message number of an ops.def row with an HTTP route (10 branch_create,
//    17 snapshot, 18 fork, ...): the text is a request body; api::parse_body, then (when
//    it is a JSON object) api::from_json<op> on it, as the HTTP server runs them. For the
//    GET / DELETE routes the body is where the server merges path and query values, so
//    every op's parser sees arbitrary JSON here.
//  - kParseId: the text is a path segment or query value for api::parse_id;
//  - kQuerySource: the text is a query value for api::query_source, whose JSON is then
//    read back by api::get_source (diff's ?a=&b=).
// Any other selector is rejected (-1: not added to the corpus). Every error becomes the
// error body the server would send (api::error_body), which must not throw on the client's
// bytes it quotes. Crashes, uncaught exceptions, leaks and undefined behaviour abort.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ipc/api_json.h"

namespace {

namespace api = pf::ipc::api;
using pf::ipc::Op;

constexpr std::uint8_t kParseId = 0xf0;
constexpr std::uint8_t kQuerySource = 0xf1;

void answer(const pf::Status& s) {
  if (!s.is_ok()) (void)api::error_body(s);
}

// False when no op with an HTTP route has message number `selector`.
bool run_op(std::uint8_t selector, std::string_view text) {
  bool known = false;
  pf::ipc::for_each_op([&]<Op op>() {
    using Traits = pf::ipc::OpTraits<op>;
    if constexpr (Traits::method != pf::ipc::HttpMethod::kNONE) {
      if (static_cast<std::uint16_t>(Traits::message) != selector) return;
      known = true;
      pf::Result<api::Json> body = api::parse_body(text);
      if (!body.is_ok()) return answer(body.status());
      pf::ipc::RequestOf<op> request;
      answer(api::from_json<op>(*body, &request));
    }
  });
  return known;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return -1;
  const std::uint8_t selector = data[0];
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  if (selector == kParseId) {
    answer(api::parse_id(text, "branch id").status());
  } else if (selector == kQuerySource) {
    api::Json body = api::Json::object();
    body["a"] = api::query_source(text);
    answer(api::get_source(body, "a").status());
  } else if (!run_op(selector, text)) {
    return -1;
  }
  return 0;
}

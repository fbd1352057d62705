#include "runtime/sha256.h"

#include <openssl/evp.h>

#include <cstdlib>

#include "base/hex.h"

namespace pf::rt {

Sha256 sha256(const void* a, std::size_t a_bytes, const void* b, std::size_t b_bytes) {
  Sha256 out{};
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  unsigned int len = 0;
  // With a valid context and the built-in SHA-256 these calls cannot fail except on
  // allocation failure, which is fatal everywhere else in the process too.
  if (ctx == nullptr || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1 ||
      (a_bytes != 0 && EVP_DigestUpdate(ctx, a, a_bytes) != 1) ||
      (b_bytes != 0 && EVP_DigestUpdate(ctx, b, b_bytes) != 1) ||
      EVP_DigestFinal_ex(ctx, out.data(), &len) != 1 || len != out.size()) {
    std::abort();
  }
  EVP_MD_CTX_free(ctx);
  return out;
}

std::string to_hex(const std::uint8_t* bytes, std::size_t n) {
  return hex_string(bytes, n);
}

}  // namespace pf::rt

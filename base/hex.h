// Hex digits of binary digests and tags (prefix keys, namespaces, CIDs). Pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pf {

// 0..15 for a hex digit (either case); -1 for anything else.
int hex_nibble(char c);
// Parses exactly 2 * n hex digits (either case) into out[0..n); false (out untouched) for
// any other length or character.
bool parse_hex(std::string_view hex, std::uint8_t* out, std::size_t n);
// 2 * n lowercase hex digits.
std::string hex_string(const std::uint8_t* bytes, std::size_t n);

}  // namespace pf

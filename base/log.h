// One-line daemon logs on stderr ("processfork: ..."), safe from any thread.
#pragma once

#include <string_view>

namespace pf {

// Writes "processfork: <line>\n" to stderr in one write(2).
void log_line(std::string_view line);

}  // namespace pf

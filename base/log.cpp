#include "base/log.h"

#include <unistd.h>

#include <string>

namespace pf {

void log_line(std::string_view line) {
  std::string out = "processfork: ";
  out.append(line);
  out.push_back('\n');
  // One write(2): lines from different threads never interleave.
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::write(STDERR_FILENO, out.data() + done, out.size() - done);
    if (n <= 0) return;  // stderr closed: logging is best effort
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace pf

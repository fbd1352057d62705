// replace_file: writes a whole small file so that no reader ever sees a partial one (the
// daemon's ready file, token file and boot-epoch counter).
//
// Contract: the text goes to "<path>.tmp.<pid>" (a leftover of that name is removed first),
// created with O_EXCL | O_NOFOLLOW, written whole, fsync'd, then renamed over `path`. With
// owner_only the file is mode 0600 from creation whatever the umask (fchmod before the first
// byte); otherwise 0666 less the umask. On failure nothing is left behind and `path` keeps
// its old content. Blocking (file I/O); not for hot paths.
#pragma once

#include <string>
#include <string_view>

#include "base/status.h"

namespace pf {

// kSystem (with errno's text) when the temporary file cannot be made, written or renamed.
Status replace_file(const std::string& path, std::string_view text, bool owner_only);

}  // namespace pf

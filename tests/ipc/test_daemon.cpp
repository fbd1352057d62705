// The daemon as the tests run it: `pf_test_daemon <serve flags>` is `processfork serve
// <serve flags>` without the CLI (which lives in shims/).
#include "ipc/daemon.h"

int main(int argc, char** argv) {
  return pf::ipc::serve_main(argc - 1, argv + 1);
}

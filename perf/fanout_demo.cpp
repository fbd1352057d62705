// fanout_demo: the README's main job — multi-process agent fan-out on ProcessFork
// (DESIGN §1.1, issue 5; docs/demo.md).
//
//   fanout_demo [--context T] [--children N] [--suffix S] [--steps K] [--model SPEC]
//               [--page-tokens P] [--dtype fp32|bf16] [--temperature X] [--seed N]
//               [--device auto|host|cuda[:N]] [--processfork PATH] [--workdir DIR]
//               [--fork-reps R] [--json FILE] [--no-control] [--inject-fault child-seed]
//
// 1. Starts `processfork serve` on a private socket in a fresh temporary directory, with a
//    pool geometry that matches the reference model (HTTP off).
// 2. This process prefills a T-token context with the reference engine through the client
//    library (append -> write runs -> KV written into the mapped pages -> commit),
//    snapshots it and forks N branches (+1 for the negative control), detached.
// 3. It computes the reference: the same context prefilled again into private memory,
//    then every branch's continuation decoded on it (an uninterrupted single-process run
//    over the same tokens; this prefill is also the re-prefill baseline).
// 4. It execs N worker processes (this binary, --child). Each connects, takes its branch
//    (its pages are the snapshot's shared pages), appends its own task suffix and decodes K
//    tokens with its own sampling seed, writing its KV into the pool, and reports every
//    step's logits and token.
// 5. A control process (the (N+1)-th) copies its branch's shared pages into private memory
//    and decodes twice: from the exact copy (must match the reference) and from the copy
//    with one byte of one shared page altered (must NOT match). It never writes the pool.
// 6. One more child, forked and started alone once the others are done: its time to first
//    token without contention (it must match the reference too).
// 7. Checks: every worker's tokens and logits equal the reference bit for bit; the control
//    is detected; the sealed context pages are byte-identical after the run; pool pages
//    after the fan-out = context + what the children appended. Prints fork latency, pages
//    shared and copied, memory with fork vs copying, time to first token vs re-prefill.
// 8. Stops the daemon (SIGTERM; its socket must be gone), reaps every child and removes
//    the directory — on failure too. Children and the daemon die with this process even if
//    it is SIGKILLed (PR_SET_PDEATHSIG). Exit status 0 only when every check passes.
//
// The parts, one job each: fanout_options (the command line), fanout_parent (the phases
// above, in order), fanout_child (a worker or the control), fanout_pool (the engine on
// the pool's pages), fanout_report (results, checks, JSON, verdict), fanout_units (clock
// and human-readable numbers), fanout_stream (what a branch decodes, the child's report),
// fanout_process (processes, the work directory, the daemon).
#include <cstdio>

#include "perf/fanout_child.h"
#include "perf/fanout_options.h"
#include "perf/fanout_parent.h"
#include "perf/fanout_pool.h"

int main(int argc, char** argv) {
  using namespace pf::demo;
  const Options o = parse_options(argc, argv);
  if (o.child) return run_child(o);
  catch_interrupts();
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  return run_parent(o);
}

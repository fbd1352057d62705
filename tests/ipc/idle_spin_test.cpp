// IdleSpin (ipc/idle_spin.h) over real pipes: it reports a descriptor that is or becomes
// readable, gives up after its window, never spins when disabled or when every spinner slot
// is taken, frees its slot when done, and never consumes a byte.
#include "ipc/idle_spin.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <thread>

#include "base/unique_fd.h"

namespace pf::ipc {
namespace {

struct Pipe {
  UniqueFd r, w;
  Pipe() {
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    r = UniqueFd(fds[0]);
    w = UniqueFd(fds[1]);
  }
  void put(char c) { ASSERT_EQ(::write(w.get(), &c, 1), 1); }
  char take() {
    char c = 0;
    EXPECT_EQ(::read(r.get(), &c, 1), 1);
    return c;
  }
};

TEST(IdleSpin, ReportsADescriptorThatIsReadableAndLeavesItsBytes) {
  IdleSpin spin(50, 1);
  Pipe p;
  p.put('x');
  EXPECT_TRUE(spin.wait_readable(p.r.get()));
  EXPECT_EQ(p.take(), 'x');
  EXPECT_EQ(spin.spinning(), 0u);
}

TEST(IdleSpin, ReportsAHangUp) {
  IdleSpin spin(50, 1);
  Pipe p;
  p.w.reset();
  EXPECT_TRUE(spin.wait_readable(p.r.get()));
}

TEST(IdleSpin, GivesUpAfterItsWindowWhenNothingArrives) {
  IdleSpin spin(200, 1);
  Pipe p;
  EXPECT_FALSE(spin.wait_readable(p.r.get()));
  EXPECT_EQ(spin.spinning(), 0u);
}

TEST(IdleSpin, SeesAFrameThatArrivesWhileItSpins) {
  IdleSpin spin(10'000'000, 1);  // 10 s: the write below ends it, whatever the scheduling
  Pipe p;
  std::thread writer([&] {
    while (spin.spinning() == 0) std::this_thread::yield();  // the spin has begun
    p.put('y');
  });
  EXPECT_TRUE(spin.wait_readable(p.r.get()));
  writer.join();
  EXPECT_EQ(p.take(), 'y');
}

TEST(IdleSpin, DisabledItReturnsAtOnceEvenWhenReadable) {
  IdleSpin off(0, 4);
  Pipe p;
  p.put('z');
  EXPECT_FALSE(off.wait_readable(p.r.get()));
  IdleSpin no_slots(50, 0);
  EXPECT_FALSE(no_slots.wait_readable(p.r.get()));
}

TEST(IdleSpin, NeverMoreSpinnersThanItsSlots) {
  IdleSpin spin(10'000'000, 1);
  Pipe held, other;
  bool held_saw = false;
  std::thread spinner([&] { held_saw = spin.wait_readable(held.r.get()); });
  while (spin.spinning() == 0) std::this_thread::yield();  // the one slot is taken
  other.put('a');
  // Readable, but no slot: it does not spin, so it cannot have seen it.
  EXPECT_FALSE(spin.wait_readable(other.r.get()));
  EXPECT_EQ(spin.spinning(), 1u);
  held.put('b');  // ends the first spin
  spinner.join();
  EXPECT_TRUE(held_saw);
  EXPECT_EQ(spin.spinning(), 0u);
  EXPECT_TRUE(spin.wait_readable(other.r.get()));  // the slot is free again
}

TEST(IdleSpin, DefaultSpinnersAreHalfTheCpusAndAtLeastOne) {
  const unsigned cpus = std::thread::hardware_concurrency();
  EXPECT_EQ(default_max_spinners(), cpus >= 2 ? cpus / 2 : 1u);
}

}  // namespace
}  // namespace pf::ipc

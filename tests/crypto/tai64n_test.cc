// Tests for crypto/tai64n: the encoding (vector from wireguard_handshake.json), the whitening
// of the nanoseconds (wireguard-go's TestMonotonic) and the strict "after" ordering used to
// reject replayed initiations.
#include "tests/vectors.h"
#include "crypto/tai64n.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace meshwg::crypto {
namespace {

using namespace std::chrono;
using nlohmann::json;

json load(const char* name) { return testing::load_vectors(name); }

std::string to_hex(const Tai64n& t) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (uint8_t c : t.b) {
    s += digits[c >> 4];
    s += digits[c & 15];
  }
  return s;
}

system_clock::time_point unix_time(int64_t secs, int64_t nanos = 0) {
  return system_clock::time_point(duration_cast<system_clock::duration>(seconds(secs) + nanoseconds(nanos)));
}

TEST(Tai64n, HandshakeVector) {
  const json v = load("wireguard_handshake.json")["inputs"];
  const Tai64n t = tai64n_from(unix_time(v["timestamp_unix"].get<int64_t>()));
  EXPECT_EQ(to_hex(t), v["timestamp_tai64n"].get<std::string>());
}

TEST(Tai64n, LayoutAndWhitening) {
  // 0x400000000000000a + 1 s, nanoseconds 0x0fffffff rounded down to a multiple of 2^24.
  const Tai64n t = tai64n_from(unix_time(1, 0x0fffffff));
  EXPECT_EQ(to_hex(t), "400000000000000b0f000000");
  EXPECT_EQ(to_hex(tai64n_from(unix_time(0, 0xffffff))), "400000000000000a00000000");
}

// wireguard-go tai64n_test.go TestMonotonic: from Unix(0, 123456789), timestamps less than
// one whitening step later must not count as later; 20 ms later must.
TEST(Tai64n, WhiteningHidesSmallSteps) {
  const auto start = unix_time(0, 123456789);
  const Tai64n t0 = tai64n_from(start);
  struct Case {
    nanoseconds step;
    bool after;
  } cases[] = {
      {10ns, false}, {10us, false}, {1ms, false}, {10ms, false}, {20ms, true},
  };
  for (const auto& c : cases) {
    const Tai64n t1 = tai64n_from(start + duration_cast<system_clock::duration>(c.step));
    EXPECT_EQ(t1.after(t0), c.after) << c.step.count() << " ns";
    EXPECT_FALSE(t0.after(t1)) << c.step.count() << " ns";
  }
}

TEST(Tai64n, AfterIsStrictAndNumeric) {
  const Tai64n a = tai64n_from(unix_time(1704067200));
  EXPECT_FALSE(a.after(a));  // the same timestamp again is a replay
  const Tai64n b = tai64n_from(unix_time(1704067201));
  EXPECT_TRUE(b.after(a));
  EXPECT_FALSE(a.after(b));
  // A carry across bytes: seconds 0x...ff vs 0x...100 must order numerically.
  const Tai64n c = tai64n_from(unix_time(0xf5));  // 0x0a + 0xf5 = 0xff
  const Tai64n d = tai64n_from(unix_time(0xf6));  // 0x100
  EXPECT_TRUE(d.after(c));
  EXPECT_FALSE(c.after(d));
  // Nanoseconds break a tie in seconds.
  EXPECT_TRUE(tai64n_from(unix_time(5, 500000000)).after(tai64n_from(unix_time(5, 0))));
  // The zero value (a fresh handshake's "latest") is older than any real timestamp.
  EXPECT_TRUE(a.after(Tai64n{}));
  EXPECT_FALSE(Tai64n{}.after(a));
}

TEST(Tai64n, NowIsCurrentTime) {
  const Tai64n before = tai64n_from(system_clock::now() - 1s);
  const Tai64n now = tai64n_now();
  EXPECT_TRUE(now.after(before));
  EXPECT_FALSE(now.after(tai64n_from(system_clock::now() + 1s)));
}

}  // namespace
}  // namespace meshwg::crypto

// Tests for crypto/replay: every case of the kernel's counter selftest and wireguard-go's
// TestReplay (replay_counter.json, each with its own REJECT limit), their bulk tests, and a
// randomized comparison against a naive model (a set of seen counters and the maximum).
#include "tests/vectors.h"
#include "crypto/replay.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>

namespace meshwg::crypto {
namespace {

using nlohmann::json;

json load(const char* name) { return testing::load_vectors(name); }

uint64_t u64(const json& j) {
  return j.is_string() ? std::stoull(j.get<std::string>()) : j.get<uint64_t>();
}

TEST(Replay, Window) {
  EXPECT_EQ(ReplayFilter::kWindowSize, 8128u);
  EXPECT_EQ(load("replay_counter.json")["parameters"]
                ["W (COUNTER_WINDOW_SIZE kernel / windowSize wireguard-go)"]
                    .get<uint64_t>(),
            ReplayFilter::kWindowSize);
}

// The symbolic list expanded with each implementation's REJECT as the limit.
void run_sequence(const json& seq, uint64_t limit, const char* name) {
  ASSERT_EQ(seq.size(), 34u);
  ReplayFilter f;
  f.reset();
  for (const auto& e : seq) {
    const uint64_t counter = u64(e["counter"]);
    EXPECT_EQ(f.validate(counter, limit), e["accept"].get<bool>())
        << name << " case " << e["n"] << " (" << e["expr"].get<std::string>() << " = " << counter
        << ")";
  }
}

TEST(Replay, KernelSequence) {
  const json v = load("replay_counter.json");
  run_sequence(v["sequence_kernel_concrete"], u64(v["parameters"]["REJECT_kernel"]), "kernel");
}

TEST(Replay, WireguardGoSequence) {
  const json v = load("replay_counter.json");
  run_sequence(v["sequence_wireguard_go_concrete"], u64(v["parameters"]["REJECT_wireguard_go"]),
               "wireguard-go");
}

// The bulk tests as described in the file; the first and last steps recorded there are
// checked against the steps generated here, so a misreading of a description fails too.
struct Step {
  uint64_t counter;
  bool accept;
};

std::vector<Step> bulk_steps(const std::string& desc, uint64_t w) {
  std::vector<Step> s;
  auto up = [&](uint64_t a, uint64_t b) { for (uint64_t i = a; i <= b; ++i) s.push_back({i, true}); };
  auto down = [&](uint64_t a, uint64_t b) { for (uint64_t i = a + 1; i-- > b;) s.push_back({i, true}); };
  if (desc.starts_with("bulk1:")) { up(1, w); s.push_back({0, true}); s.push_back({0, false}); }
  else if (desc.starts_with("bulk2:")) { up(2, w + 1); s.push_back({1, true}); s.push_back({0, false}); }
  else if (desc == "bulk3: i=W down to 0 accept") { down(w, 0); }
  else if (desc == "bulk3: i=W+1 down to 1 accept") { down(w + 1, 1); }
  else if (desc == "bulk4: i=W+1 down to 1 accept; then 0 reject") { down(w + 1, 1); s.push_back({0, false}); }
  else if (desc == "bulk4: i=W+2 down to 2 accept; then 0 reject") { down(w + 2, 2); s.push_back({0, false}); }
  else if (desc.starts_with("bulk5:")) { down(w, 1); s.push_back({w + 1, true}); s.push_back({0, false}); }
  else if (desc.starts_with("bulk6:")) { down(w, 1); s.push_back({0, true}); s.push_back({w + 1, true}); }
  else ADD_FAILURE() << "unknown bulk test: " << desc;
  return s;
}

void run_bulk(const json& tests, uint64_t limit) {
  ASSERT_EQ(tests.size(), 6u);
  for (const auto& t : tests) {
    const std::string desc = t["desc"];
    const auto steps = bulk_steps(desc, ReplayFilter::kWindowSize);
    ASSERT_EQ(steps.size(), t["count"].get<size_t>()) << desc;
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(steps[i].counter, t["first"][i][0].get<uint64_t>()) << desc;
      EXPECT_EQ(steps[i].accept, t["first"][i][1].get<bool>()) << desc;
      const auto& last = steps[steps.size() - 3 + i];
      EXPECT_EQ(last.counter, t["last"][i][0].get<uint64_t>()) << desc;
      EXPECT_EQ(last.accept, t["last"][i][1].get<bool>()) << desc;
    }
    ReplayFilter f;
    f.reset();
    for (size_t i = 0; i < steps.size(); ++i)
      ASSERT_EQ(f.validate(steps[i].counter, limit), steps[i].accept)
          << desc << " step " << i << " counter " << steps[i].counter;
  }
}

TEST(Replay, KernelBulk) {
  const json v = load("replay_counter.json");
  run_bulk(v["bulk_tests_kernel"], u64(v["parameters"]["REJECT_kernel"]));
}

TEST(Replay, WireguardGoBulk) {
  const json v = load("replay_counter.json");
  run_bulk(v["bulk_tests_wireguard_go"], u64(v["parameters"]["REJECT_wireguard_go"]));
}

TEST(Replay, ResetForgetsEverything) {
  ReplayFilter f;
  f.reset();
  ASSERT_TRUE(f.validate(100000, UINT64_MAX));
  ASSERT_FALSE(f.validate(5, UINT64_MAX));
  f.reset();
  EXPECT_TRUE(f.validate(5, UINT64_MAX));
  EXPECT_TRUE(f.validate(0, UINT64_MAX));
}

// Differential test against the obvious model: accept iff below limit, not seen, and no more
// than W behind the highest accepted counter. Jumps mix small steps, window-edge distances
// and large leaps so ring clearing and wrap-around are exercised.
TEST(Replay, MatchesNaiveModel) {
  constexpr uint64_t W = ReplayFilter::kWindowSize;
  std::mt19937_64 rng(1);
  for (int round = 0; round < 20; ++round) {
    ReplayFilter f;
    f.reset();
    std::set<uint64_t> seen;
    uint64_t highest = 0;
    const uint64_t limit = round % 2 ? UINT64_MAX : 50000;
    for (int i = 0; i < 20000; ++i) {
      uint64_t c;
      switch (rng() % 6) {
        case 0: c = highest + rng() % 70; break;
        case 1: c = highest - std::min<uint64_t>(highest, W - 2 + rng() % 5); break;
        case 2: c = highest - std::min<uint64_t>(highest, rng() % W); break;
        case 3: c = highest + rng() % (3 * 8192); break;
        case 4: c = rng() % (highest + 1); break;
        default: {  // a duplicate of a recently accepted counter
          if (seen.empty()) { c = 0; break; }
          auto it = seen.end();
          std::advance(it, -static_cast<long>(1 + rng() % std::min<size_t>(seen.size(), 64)));
          c = *it;
          break;
        }
      }
      const bool expect = c < limit && !seen.count(c) && (seen.empty() || c + W >= highest);
      ASSERT_EQ(f.validate(c, limit), expect) << "round " << round << " step " << i << " counter "
                                              << c << " highest " << highest;
      if (expect) {
        seen.insert(c);
        highest = std::max(highest, c);
        // Keep the model small: counters far behind can never be accepted again anyway.
        while (!seen.empty() && *seen.begin() + W + 1 < highest) seen.erase(seen.begin());
      }
    }
  }
}

}  // namespace
}  // namespace meshwg::crypto

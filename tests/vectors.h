// Test helper: locates and loads the published test vectors copied into tests/vectors/
// (JSON, parsed with nlohmann-json) and decodes their hex strings.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace meshwg::testing {

// MESHWG_TEST_VECTORS (set by meson), else tests/vectors beside this header. __FILE__ may be
// relative to the directory the compiler ran in (the build tree), so it and tests/vectors are
// also tried from the current directory and its ancestors.
inline std::filesystem::path vectors_dir() {
  if (const char* env = std::getenv("MESHWG_TEST_VECTORS"); env != nullptr && *env != '\0')
    return env;
  const auto rel = std::filesystem::path(__FILE__).parent_path() / "vectors";
  if (rel.is_absolute()) return rel;
  std::error_code ec;
  auto dir = std::filesystem::current_path(ec);
  for (; !ec && !dir.empty(); dir = dir.parent_path()) {
    std::error_code missing;  // set for paths that do not exist: not an error here
    if (std::filesystem::is_directory(dir / rel, missing)) return dir / rel;
    if (std::filesystem::is_directory(dir / "tests" / "vectors", missing))
      return dir / "tests" / "vectors";
    if (dir == dir.parent_path()) break;
  }
  return rel;
}

inline nlohmann::json load_vectors(const char* name) {
  std::ifstream f(vectors_dir() / name);
  if (!f) {
    ADD_FAILURE() << "cannot open vector file " << (vectors_dir() / name);
    return nlohmann::json::object();
  }
  return nlohmann::json::parse(f);
}

// Lowercase or uppercase hex to bytes; a bad digit fails the test.
inline std::vector<uint8_t> hex_bytes(const std::string& s) {
  std::vector<uint8_t> out;
  auto nib = [](char c) -> uint8_t {
    if (c >= '0' && c <= '9') return uint8_t(c - '0');
    if (c >= 'a' && c <= 'f') return uint8_t(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return uint8_t(c - 'A' + 10);
    ADD_FAILURE() << "bad hex digit " << c;
    return 0;
  };
  if (s.size() % 2 != 0) ADD_FAILURE() << "odd-length hex string";
  for (size_t i = 0; i + 1 < s.size(); i += 2)
    out.push_back(uint8_t(nib(s[i]) << 4 | nib(s[i + 1])));
  return out;
}

// Exactly 32 bytes of hex (a key); any other length fails the test.
inline std::array<uint8_t, 32> hex_array32(const std::string& s) {
  const std::vector<uint8_t> b = hex_bytes(s);
  std::array<uint8_t, 32> a{};
  EXPECT_EQ(b.size(), 32u) << s;
  std::copy_n(b.begin(), std::min<size_t>(32, b.size()), a.begin());
  return a;
}

}  // namespace meshwg::testing

// Micro-benchmark of dataplane/allowedips lookup (the per-packet routing and source check):
// tables of 10k and 1M random prefixes, half IPv4 and half IPv6, queried with random
// addresses of both families. main() comes from crypto_bench.cc (BENCHMARK_MAIN).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "dataplane/allowedips.h"

namespace meshwg::dataplane {
namespace {

struct Fixture {
  AllowedIps table;
  std::vector<IpAddress> queries;
};

IpAddress random_address(std::mt19937_64& rng, uint8_t family) {
  IpAddress a;
  a.family = family;
  for (size_t i = 0; i < a.size(); ++i) a.bytes[i] = uint8_t(rng());
  return a;
}

// Built once per size: inserting 1M prefixes takes longer than the measurement.
Fixture& fixture(size_t prefixes) {
  static std::map<size_t, std::unique_ptr<Fixture>> cache;
  auto& slot = cache[prefixes];
  if (slot) return *slot;
  slot = std::make_unique<Fixture>();
  std::mt19937_64 rng(prefixes);
  constexpr size_t kQueries = 1 << 16;  // power of two: the loop indexes with a mask
  std::vector<IpPrefix> sample;
  for (size_t i = 0; i < prefixes; ++i) {
    IpPrefix p;
    p.addr = random_address(rng, i % 2 ? 4 : 6);
    // v4 /8../32 and v6 /32../128: no near-default routes, which would make every miss a hit.
    const unsigned maxbits = unsigned(p.addr.size() * 8);
    const unsigned minbits = maxbits / 4;
    p.cidr = uint8_t(minbits + rng() % (maxbits - minbits + 1));
    p.mask();
    slot->table.insert(p, reinterpret_cast<Peer*>(uintptr_t(1 + rng() % 1000)));
    if (sample.size() < kQueries / 2) sample.push_back(p);
  }
  // Half the queries fall inside a stored prefix (a hit walks to its full depth), half are
  // uniform (mostly misses that stop early).
  for (size_t i = 0; i < kQueries; ++i) {
    IpAddress a = random_address(rng, i % 2 ? 4 : 6);
    if (i % 4 < 2) {
      const IpPrefix& p = sample[rng() % sample.size()];
      a.family = p.addr.family;
      for (unsigned b = 0; b < p.cidr; ++b) {
        const uint8_t m = uint8_t(0x80 >> (b % 8));
        a.bytes[b / 8] = uint8_t((a.bytes[b / 8] & ~m) | (p.addr.bytes[b / 8] & m));
      }
    }
    slot->queries.push_back(a);
  }
  std::shuffle(slot->queries.begin(), slot->queries.end(), rng);
  return *slot;
}

void BM_AllowedIpsLookup(benchmark::State& state) {
  Fixture& f = fixture(size_t(state.range(0)));
  size_t i = 0;
  const size_t mask = f.queries.size() - 1;
  for (auto _ : state) {
    benchmark::DoNotOptimize(f.table.lookup(f.queries[i & mask]));
    ++i;
  }
  state.SetItemsProcessed(int64_t(state.iterations()));
  state.counters["prefixes"] = double(f.table.size());
  state.counters["nodes"] = double(f.table.node_count());
}
BENCHMARK(BM_AllowedIpsLookup)->Arg(10'000)->Arg(1'000'000);

}  // namespace
}  // namespace meshwg::dataplane

// libFuzzer target for dataplane/allowedips: the input is a program of insert / remove /
// remove_by_peer / lookup operations run on the trie and on a naive linear longest-match
// model at once; any disagreement, or a broken trie invariant, aborts.
//
// Encoding, repeated until the input ends (a short tail is padded with zeros):
//   byte 0: bits 0-1 op (0 insert, 1 remove, 2 remove_by_peer, 3 lookup)
//           bits 2-3 address mode (0 v4 literal, 1 v6 literal, 2 v4 previous with one bit
//                    flipped, 3 v6 previous with one bit flipped; modes 2-3 build the long
//                    shared paths that random bytes rarely give)
//           bits 4-6 peer 1..8
//   byte 1: cidr (modulo the family's width + 1)
//   then 4 or 16 address bytes (literal modes) or 1 byte giving the bit to flip.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "dataplane/allowedips.h"

using meshwg::dataplane::AllowedIps;
using meshwg::dataplane::IpAddress;
using meshwg::dataplane::IpPrefix;
using meshwg::dataplane::Peer;

namespace {

struct Reader {
  const uint8_t* p;
  size_t n;
  uint8_t byte() {
    if (n == 0) return 0;
    --n;
    return *p++;
  }
};

bool covers(const IpPrefix& p, const IpAddress& a) {
  if (p.addr.family != a.family) return false;
  for (unsigned i = 0; i < p.cidr; ++i) {
    const unsigned bit = 7 - i % 8;
    if (((p.addr.bytes[i / 8] >> bit) & 1) != ((a.bytes[i / 8] >> bit) & 1)) return false;
  }
  return true;
}

struct Entry {
  IpPrefix prefix;
  Peer* peer;
};

Peer* model_lookup(const std::vector<Entry>& m, const IpAddress& a) {
  const Entry* best = nullptr;
  for (const auto& e : m)
    if (covers(e.prefix, a) && (!best || e.prefix.cidr > best->prefix.cidr)) best = &e;
  return best ? best->peer : nullptr;
}

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;  // the model is quadratic; long inputs add time, not coverage
  AllowedIps table;
  std::vector<Entry> model;
  IpAddress last[2];
  last[0].family = 4;
  last[1].family = 6;

  Reader in{data, size};
  while (in.n > 0) {
    const uint8_t hdr = in.byte();
    const unsigned op = hdr & 3;
    const unsigned mode = (hdr >> 2) & 3;
    Peer* peer = reinterpret_cast<Peer*>(uintptr_t(1 + ((hdr >> 4) & 7)));
    const bool v6 = mode & 1;
    const unsigned maxbits = v6 ? 128 : 32;
    const uint8_t cidr = uint8_t(in.byte() % (maxbits + 1));
    IpAddress& a = last[v6];
    if (mode < 2) {
      for (size_t i = 0; i < a.size(); ++i) a.bytes[i] = in.byte();
    } else {
      const unsigned bit = in.byte() % maxbits;
      a.bytes[bit / 8] ^= uint8_t(0x80 >> (bit % 8));
    }
    IpPrefix p;
    p.addr = a;
    p.cidr = cidr;

    switch (op) {
      case 0: {
        table.insert(p, peer);
        p.mask();
        bool found = false;
        for (auto& e : model)
          if (e.prefix == p) {
            e.peer = peer;
            found = true;
          }
        if (!found) model.push_back({p, peer});
        break;
      }
      case 1: {
        const bool removed = table.remove(p, peer);
        p.mask();
        bool want = false;
        for (size_t i = 0; i < model.size(); ++i)
          if (model[i].prefix == p && model[i].peer == peer) {
            model.erase(model.begin() + long(i));
            want = true;
            break;
          }
        check(removed == want);
        break;
      }
      case 2:
        table.remove_by_peer(peer);
        std::erase_if(model, [peer](const Entry& e) { return e.peer == peer; });
        break;
      case 3:
        check(table.lookup(a) == model_lookup(model, a));
        break;
    }
    check(table.size() == model.size());
  }

  check(table.self_check());
  for (uintptr_t i = 1; i <= 8; ++i) {
    Peer* peer = reinterpret_cast<Peer*>(i);
    size_t n = 0;
    table.for_each(peer, [&](const IpPrefix& p) {
      ++n;
      bool found = false;
      for (const auto& e : model) found |= e.prefix == p && e.peer == peer;
      check(found);
    });
    size_t want = 0;
    for (const auto& e : model) want += e.peer == peer;
    check(n == want);
  }
  for (uintptr_t i = 1; i <= 8; ++i) table.remove_by_peer(reinterpret_cast<Peer*>(i));
  check(table.size() == 0 && table.node_count() == 0);
  return 0;
}

#!/usr/bin/env bash
# The data plane stays vanilla (DESIGN.md rule 2): no object built from dataplane/ defines or
# refers to a symbol of the traversal control plane (STUN, WG-STUN, relay, candidates,
# UPnP-IGD / NAT-PMP) or to anything in meshwg::control. Reads the core library's symbols.
# Usage: no_traversal_symbols.sh path/to/libmeshwg_core.a
set -euo pipefail
lib=$1
syms=$(nm -C -A "$lib")
dataplane=$(grep -E '/dataplane_[a-z_]+\.cc\.o:' <<<"$syms" || true)
if [[ -z $dataplane ]]; then
  echo "no dataplane objects in $lib: the check would pass vacuously"
  exit 1
fi
# The patterns must be able to match: they do on the control plane's STUN code. (Counts,
# not grep -q: with pipefail an early-exiting reader would fail the pipe.)
stun_code=$(grep -E '/control_stun\.cc\.o:' <<<"$syms" || true)
if (($(grep -ciE 'stun' <<<"$stun_code") == 0 || $(grep -c 'meshwg::control::' <<<"$syms") == 0)); then
  echo "self-check failed: the patterns match nothing in control/"
  exit 1
fi
bad=$(grep -iE 'stun|relay|upnp|natpmp|nat_pmp|candidate|meshwg::control::' <<<"$dataplane" || true)
if [[ -n $bad ]]; then
  echo "traversal symbols in the data plane:"
  head -20 <<<"$bad"
  exit 1
fi
echo "$(grep -oE '/dataplane_[a-z_]+\.cc\.o' <<<"$dataplane" | sort -u | wc -l) dataplane objects, no traversal symbols"

// CHECK for the fuzz targets: a broken invariant must crash so libFuzzer keeps the input,
// in every build type (assert() vanishes under NDEBUG).
#pragma once

#include <cstdio>
#include <cstdlib>

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "CHECK failed: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      abort();                                                                 \
    }                                                                          \
  } while (0)

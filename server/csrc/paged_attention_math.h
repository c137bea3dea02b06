// The vector primitives of paged_attention.cpp: dot product, axpy and scaling over one head_dim row.
//
// Written as plain loops with `omp simd` so that -O3 -march=native vectorises them for whatever ISA the building
// machine has (AVX2, AVX-512, ...), nothing hard-coded. Cache rows may be bfloat16: widening bf16 to float is a 16-bit
// shift of the raw bits, which vectorises as well.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>

namespace rho_serve {

inline float widen(float x) { return x; }

inline float widen(c10::BFloat16 x) {
  const uint32_t bits = static_cast<uint32_t>(x.x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

// Sum of q[i] * k[i]. Several partial sums (the simd reduction) instead of one serial chain.
template <typename T>
inline float dot(const float* __restrict q, const T* __restrict k, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += q[i] * widen(k[i]);
  return s;
}

// y += a * x
template <typename T>
inline void axpy(float a, const T* __restrict x, float* __restrict y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * widen(x[i]);
}

inline void scale_in_place(float* __restrict y, float a, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] *= a;
}

}  // namespace rho_serve

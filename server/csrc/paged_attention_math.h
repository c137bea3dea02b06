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

// exp(x) for x <= 0 (scores minus their running max), written so that a loop of it vectorises: x = k ln2 + r with
// |r| <= ln2/2 (Cody-Waite split of ln2), exp(r) by Cephes' degree-6 polynomial (relative error ~1e-7), 2^k built in
// the exponent bits. Inputs below -87 (including -inf) give ~1e-38 instead of 0, which is harmless as a weight. k is
// rounded with the 1.5 * 2^23 trick, not floorf: a floorf call keeps g++ 12 from vectorising the loop ("no vectype").
// Shared with fused_ops.cpp (SiLU).
inline float exp_nonpositive(float x) {
  x = x < -87.f ? -87.f : x;
  const float k = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  const float r = x - k * 0.693359375f + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float two_k;
  std::memcpy(&two_k, &bits, sizeof(two_k));
  return p * two_k;
}

// p[i] = exp(s[i] - m) for the n scores of a block; returns their sum.
inline float exp_and_sum(float* __restrict s, float m, int64_t n) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    s[i] = exp_nonpositive(s[i] - m);
    sum += s[i];
  }
  return sum;
}

inline void scale_in_place(float* __restrict y, float a, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] *= a;
}

}  // namespace rho_serve

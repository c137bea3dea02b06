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

// Sum of q[i] * k[i], for rows that are multiples of 16 floats (head_dim 32, 64, 128): 16-lane products summed
// vertically, then one pairwise fold of the lanes. Written with GCC/Clang vector types (lowered to AVX-512, AVX2,
// NEON, ...) because neither `omp simd reduction` nor a partial-sum array survives g++ 12 at a compile-time
// length: it unrolls them and adds the 16 lanes in order through memory, a chain of dependent adds per key that made
// decode attention ~10x slower. Other lengths take the scalar loop.
typedef float f32x16 __attribute__((vector_size(64)));
typedef float f32x8 __attribute__((vector_size(32)));
typedef float f32x4 __attribute__((vector_size(16)));
typedef uint16_t u16x16 __attribute__((vector_size(32)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));

inline f32x16 load16(const float* p) {
  f32x16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline f32x16 load16(const c10::BFloat16* p) {  // bf16 -> f32: the 16 bits become the top half of the float
  u16x16 raw;
  std::memcpy(&raw, p, sizeof(raw));
  const u32x16 bits = __builtin_convertvector(raw, u32x16) << 16;
  f32x16 v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

inline float lane_sum(f32x16 v) {
  const f32x8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                  __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const f32x4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}

template <typename T>
inline float dot(const float* __restrict q, const T* __restrict k, int64_t n) {
  if (n % 16 == 0) {
    f32x16 acc = load16(q) * load16(k);
    for (int64_t i = 16; i < n; i += 16) acc += load16(q + i) * load16(k + i);
    return lane_sum(acc);
  }
  float s = 0.f;
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

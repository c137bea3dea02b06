// Fused elementwise ops of the Llama forward on CPU, float32: RMSNorm (optionally with the residual add before it),
// rotary embedding in place on the fused qkv rows, and SiLU-and-mul of the fused gate/up rows.
//
// Registered next to paged_attention in the rho_serve namespace (a library fragment, built into the same extension by
// server/cpu_attention.py); server/cpu_ops.py calls them and keeps the plain torch formulas as reference and fallback.
// Each replaces 5-15 small aten ops (and their temporaries) per call with one pass over the rows; rows are split
// across at::parallel_for's threads only when there are enough of them to pay for the fork.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "paged_attention_math.h"

namespace rho_serve {
namespace {

constexpr int64_t kGrainElements = 1 << 15;  // elements per thread below which one thread does all rows

int64_t grain_rows(int64_t row_len) { return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(row_len, 1)); }

void check_rows(const at::Tensor& x, const char* what) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() == 2 && x.stride(1) == 1,
              what, " must be a float32 CPU matrix (rows, features) with contiguous rows");
}

// out[r] = x[r] * rsqrt(mean(x[r]^2) + eps) * w; the sum of squares in float32 with simd partial sums.
inline void rms_row(const float* __restrict x, const float* __restrict w, float* __restrict out, int64_t n,
                    float eps) {
  float ss = 0.f;
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.f / std::sqrt(ss / static_cast<float>(n) + eps);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * inv);
}

// x (rows, hidden), weight (hidden,) -> (rows, hidden)
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  check_rows(x, "rms_norm input");
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.is_contiguous() && weight.numel() == x.size(1),
              "rms_norm weight must be float32 (hidden,)");
  auto out = at::empty({x.size(0), x.size(1)}, x.options());
  const int64_t n = x.size(1), xs = x.stride(0);
  const float *xp = x.data_ptr<float>(), *wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, x.size(0), grain_rows(n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) rms_row(xp + r * xs, wp, op + r * n, n, static_cast<float>(eps));
  });
  return out;
}

// residual += x (in place), then returns rms_norm(residual): the pre-norm layer's "add, then normalise" in one pass.
at::Tensor add_rms_norm_(const at::Tensor& x, at::Tensor& residual, const at::Tensor& weight, double eps) {
  check_rows(x, "add_rms_norm_ input");
  TORCH_CHECK(residual.is_contiguous() && residual.scalar_type() == at::kFloat && residual.sizes() == x.sizes(),
              "add_rms_norm_ residual must be a contiguous float32 matrix of the input's shape");
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.is_contiguous() && weight.numel() == x.size(1),
              "add_rms_norm_ weight must be float32 (hidden,)");
  auto out = at::empty({x.size(0), x.size(1)}, x.options());
  const int64_t n = x.size(1), xs = x.stride(0);
  const float *xp = x.data_ptr<float>(), *wp = weight.data_ptr<float>();
  float *rp = residual.data_ptr<float>(), *op = out.data_ptr<float>();
  at::parallel_for(0, x.size(0), grain_rows(n), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float* __restrict res = rp + r * n;
      const float* __restrict add = xp + r * xs;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) res[i] += add[i];
      rms_row(res, wp, op + r * n, n, static_cast<float>(eps));
    }
  });
  return out;
}

// sigmoid(x) from e = exp(-|x|) <= 1, so the exp never overflows: 1 / (1 + e) for x >= 0, e / (1 + e) below. Both
// sides computed and then selected (a blend), so the loop vectorises; a branch per element kept it scalar (6x slower).
inline float sigmoid(float x) {
  const float e = exp_nonpositive(x < 0.f ? x : -x);
  const float r = 1.f / (1.f + e);
  const float below = e * r;
  return x >= 0.f ? r : below;
}

// gate_up (rows, 2 * inter): [gate | up] -> (rows, inter) silu(gate) * up
at::Tensor silu_and_mul(const at::Tensor& gate_up) {
  check_rows(gate_up, "silu_and_mul input");
  TORCH_CHECK(gate_up.size(1) % 2 == 0, "silu_and_mul input must have an even number of columns");
  const int64_t inter = gate_up.size(1) / 2, gs = gate_up.stride(0);
  auto out = at::empty({gate_up.size(0), inter}, gate_up.options());
  const float* gp = gate_up.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, gate_up.size(0), grain_rows(2 * inter), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* __restrict g = gp + r * gs;
      const float* __restrict u = g + inter;
      float* __restrict o = op + r * inter;
#pragma omp simd
      for (int64_t i = 0; i < inter; ++i) o[i] = g[i] * sigmoid(g[i]) * u[i];
    }
  });
  return out;
}

// Rotary embedding (Hugging Face's rotate-half layout) in place on the first num_rotated_heads heads of each row of
// qkv (num_tokens, >= num_rotated_heads * head_dim): the q heads then the k heads of the fused projection, v untouched.
// cos, sin (max_positions, head_dim) are the model's tables; positions (num_tokens,) int64.
void rotary_(at::Tensor& qkv, const at::Tensor& positions, const at::Tensor& cos, const at::Tensor& sin,
             int64_t num_rotated_heads, int64_t head_dim) {
  check_rows(qkv, "rotary_ qkv");
  TORCH_CHECK(head_dim % 2 == 0 && qkv.size(1) >= num_rotated_heads * head_dim, "rotary_: bad head layout");
  TORCH_CHECK(positions.scalar_type() == at::kLong && positions.is_contiguous() && positions.numel() == qkv.size(0),
              "rotary_ positions must be contiguous int64 (num_tokens,)");
  for (const auto* t : {&cos, &sin})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->dim() == 2 && t->size(1) == head_dim,
                "rotary_ cos/sin tables must be contiguous float32 (max_positions, head_dim)");
  const int64_t max_pos = cos.size(0), half = head_dim / 2, qs = qkv.stride(0);
  const int64_t* pos = positions.data_ptr<int64_t>();
  for (int64_t t = 0; t < qkv.size(0); ++t)
    TORCH_CHECK(pos[t] >= 0 && pos[t] < max_pos, "rotary_: position ", pos[t], " outside the table of ", max_pos);
  float* base = qkv.data_ptr<float>();
  const float *cp = cos.data_ptr<float>(), *sp = sin.data_ptr<float>();
  at::parallel_for(0, qkv.size(0), grain_rows(num_rotated_heads * head_dim), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* __restrict c = cp + pos[t] * head_dim;
      const float* __restrict s = sp + pos[t] * head_dim;
      for (int64_t h = 0; h < num_rotated_heads; ++h) {
        float* __restrict x = base + t * qs + h * head_dim;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const float x1 = x[i], x2 = x[i + half];
          x[i] = x1 * c[i] - x2 * s[i];
          x[i + half] = x2 * c[i + half] + x1 * s[i + half];
        }
      }
    }
  });
}

}  // namespace
}  // namespace rho_serve

TORCH_LIBRARY_FRAGMENT(rho_serve, m) {
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("add_rms_norm_(Tensor x, Tensor(a!) residual, Tensor weight, float eps) -> Tensor");
  m.def("silu_and_mul(Tensor gate_up) -> Tensor");
  m.def("rotary_(Tensor(a!) qkv, Tensor positions, Tensor cos, Tensor sin, int num_rotated_heads, int head_dim) -> ()");
}

TORCH_LIBRARY_IMPL(rho_serve, CPU, m) {
  m.impl("rms_norm", &rho_serve::rms_norm);
  m.impl("add_rms_norm_", &rho_serve::add_rms_norm_);
  m.impl("silu_and_mul", &rho_serve::silu_and_mul);
  m.impl("rotary_", &rho_serve::rotary_);
}

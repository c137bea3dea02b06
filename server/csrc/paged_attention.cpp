// Paged attention on CPU that reads the KV cache in place through the block tables (no gather copies).
//
// Registered as torch.ops.rho_serve.paged_attention; server/cpu_attention.py builds and loads it. Semantics are those
// of server/attention.py's pure-torch `paged_attention`: each sequence s owns new tokens
// [query_start_loc[s], query_start_loc[s+1]) whose positions are the last q_len of its seq_lens[s] context tokens; a
// query at position p sees keys at positions <= p, and with a sliding window W only those > p - W. Grouped-query heads:
// query head h reads kv head h / (num_heads / num_kv_heads).
//
// Work is split into items (sequence, kv head, tile of <= kQueryTile new tokens); each item keeps a flash-style
// online softmax (running max, running sum, float32 accumulator) per query row and walks the blocks of its key range
// once, so a block's keys and values are loaded once for all query heads of the group. Items run longest first on
// at::parallel_for's threads, taken from a shared counter so that uneven sequence lengths balance.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "paged_attention_math.h"

namespace rho_serve {
namespace {

constexpr int64_t kQueryTile = 16;  // new tokens per work item: bounds the per-item state for long prefill chunks
constexpr int64_t kTransposeRows = 8;  // query rows per item from which transposing each key block once pays

struct Item {
  int64_t seq, kv_head, kv_head_end, q_begin, q_end;  // rows [q_begin, q_end) of the sequence's new tokens, over
                                                       // kv heads [kv_head, kv_head_end) (one but single-row tiles)
  int64_t cost;                          // query rows x keys, for longest-first ordering
};

template <typename T>
struct Problem {
  const float* q;  // (num_tokens, num_heads, head_dim), last dim contiguous
  int64_t q_stride_token, q_stride_head;
  float* out;      // (num_tokens, num_heads, head_dim), contiguous
  const T* k;      // (num_blocks, block_size, num_kv_heads, head_dim), contiguous
  const T* v;
  const int32_t* query_start_loc;  // (num_seqs + 1,)
  const int32_t* seq_lens;         // (num_seqs,)
  const int32_t* block_tables;     // (num_seqs, table_stride)
  int64_t table_stride, num_heads, num_kv_heads, head_dim, block_size;
  float scale;
  int64_t window;  // <= 0: no sliding window
};

// Key positions [lo, hi) that query position p may see.
inline int64_t key_lo(int64_t p, int64_t window) { return window > 0 ? std::max<int64_t>(0, p - window + 1) : 0; }

// Per-row online softmax state: running max m, running sum l, accumulator acc (head_dim floats).
struct RowState {
  std::vector<float> m, l, acc, scores, kt;  // kt: one block's keys transposed (head_dim, block_size)
  void reset(int64_t rows, int64_t head_dim, int64_t block_size) {
    m.assign(rows, -std::numeric_limits<float>::infinity());
    l.assign(rows, 0.f);
    acc.assign(rows * head_dim, 0.f);
    scores.resize(block_size);
    kt.resize(block_size * head_dim);
  }
};

// Fold the scores [t0, t1) of one block (already scaled) into one query row's state; `scores` become the softmax
// weights. v_rows points at the block's first value for this kv head; consecutive values are `key_stride` apart.
template <typename T>
inline void fold_scores(float* scores, const T* v_rows, int64_t key_stride, int64_t t0, int64_t t1, int64_t D,
                        float& m, float& l, float* acc) {
  float block_max = -std::numeric_limits<float>::infinity();
  for (int64_t t = t0; t < t1; ++t) block_max = std::max(block_max, scores[t]);
  const float m_new = std::max(m, block_max);
  if (m_new > m) {  // rescale what was accumulated under the old max (exp(-inf) = 0 on the first block)
    const float alpha = std::exp(m - m_new);
    l *= alpha;
    scale_in_place(acc, alpha, D);
    m = m_new;
  }
  l += exp_and_sum(scores + t0, m, t1 - t0);
  for (int64_t t = t0; t < t1; ++t) axpy(scores[t], v_rows + t * key_stride, acc, D);
}

// Scores of one query row against keys [t0, t1) of a block, one dot product per key (decode: few rows per block).
template <typename T>
inline void scores_by_dot(const float* q, const T* k_rows, int64_t key_stride, int64_t t0, int64_t t1, int64_t D,
                          float scale, float* scores) {
  for (int64_t t = t0; t < t1; ++t) scores[t] = dot(q, k_rows + t * key_stride, D) * scale;
}

// The same from the block's keys transposed once into kt (D, BS) (prefill: many rows per block), vectorised over
// keys: no horizontal sum per key.
inline void scores_by_transposed(const float* q, const float* kt, int64_t BS, int64_t t0, int64_t t1, int64_t D,
                                 float scale, float* __restrict scores) {
  for (int64_t t = t0; t < t1; ++t) scores[t] = 0.f;
  for (int64_t d = 0; d < D; ++d) {
    const float qd = q[d] * scale;
    const float* __restrict row = kt + d * BS;
#pragma omp simd
    for (int64_t t = t0; t < t1; ++t) scores[t] += qd * row[t];
  }
}

template <typename T>
inline void transpose_block(const T* k_rows, int64_t key_stride, int64_t BS, int64_t D, float* kt) {
  for (int64_t t = 0; t < BS; ++t)
    for (int64_t d = 0; d < D; ++d) kt[d * BS + t] = widen(k_rows[t * key_stride + d]);
}

template <typename T, int HEAD_DIM>  // HEAD_DIM 0: known only at run time
void run_item(const Problem<T>& P, const Item& it, RowState& st) {
  const int64_t D = HEAD_DIM > 0 ? HEAD_DIM : P.head_dim;
  const int64_t group = P.num_heads / P.num_kv_heads, BS = P.block_size;
  const int64_t tok0 = P.query_start_loc[it.seq];
  const int64_t q_len = P.query_start_loc[it.seq + 1] - tok0;
  const int64_t prefix = P.seq_lens[it.seq] - q_len;  // cached context before the first new token
  const int64_t rows = (it.q_end - it.q_begin) * group;
  st.reset(rows, D, BS);
  const int64_t lo = key_lo(prefix + it.q_begin, P.window), hi = prefix + it.q_end;  // the item's key range
  const int32_t* table = P.block_tables + it.seq * P.table_stride;
  const int64_t key_stride = P.num_kv_heads * D;
  for (int64_t blk = lo / BS; blk * BS < hi; ++blk) {
    const int64_t base = blk * BS;
    const int64_t offset = (static_cast<int64_t>(table[blk]) * BS * P.num_kv_heads + it.kv_head) * D;
    const T* k_rows = P.k + offset;
    const T* v_rows = P.v + offset;
    const bool transposed = rows >= kTransposeRows;
    if (transposed) transpose_block(k_rows, key_stride, BS, D, st.kt.data());
    for (int64_t i = it.q_begin; i < it.q_end; ++i) {
      const int64_t p = prefix + i;
      const int64_t t0 = std::max<int64_t>(key_lo(p, P.window) - base, 0);
      const int64_t t1 = std::min<int64_t>(p + 1 - base, BS);
      if (t0 >= t1) continue;
      for (int64_t j = 0; j < group; ++j) {
        const int64_t r = (i - it.q_begin) * group + j, h = it.kv_head * group + j;
        const float* q = P.q + (tok0 + i) * P.q_stride_token + h * P.q_stride_head;
        float* scores = st.scores.data();
        if (transposed)
          scores_by_transposed(q, st.kt.data(), BS, t0, t1, D, P.scale, scores);
        else
          scores_by_dot(q, k_rows, key_stride, t0, t1, D, P.scale, scores);
        fold_scores(scores, v_rows, key_stride, t0, t1, D, st.m[r], st.l[r], st.acc.data() + r * D);
      }
    }
  }
  for (int64_t i = it.q_begin; i < it.q_end; ++i) {
    for (int64_t j = 0; j < group; ++j) {
      const int64_t r = (i - it.q_begin) * group + j, h = it.kv_head * group + j;
      float* o = P.out + ((tok0 + i) * P.num_heads + h) * D;
      const float inv = 1.f / st.l[r];  // l >= 1: every query sees at least its own key
      const float* a = st.acc.data() + r * D;
      for (int64_t d = 0; d < D; ++d) o[d] = a[d] * inv;
    }
  }
}

// One query row (decode rows, and a chunk's last tile of one token) over a run of kv heads [kv_head, kv_head_end):
// the block loop is outermost, so each block's rows of all those heads are read in one pass, and the next block's
// are prefetched as one contiguous span per key (blocks sit at random places in the pool, where the hardware
// prefetchers cannot follow). Per query head, the softmax state (running max, sum) and the float32 accumulator live
// in a small local array between blocks; within a block the accumulator is a local copy that stays in registers,
// split in two by key parity so consecutive keys' value FMAs do not wait on each other. run_item's general path keeps
// its state in memory for any number of rows, which costs a store-to-load round trip per key (~2-4x slower here).
constexpr int64_t kMaxDecodeBlock = 256;  // scores of one block live on the stack
constexpr int64_t kMaxRowHeads = 16;      // query heads one single-row item carries (its state is on the stack)

// Whether single-row tiles take run_row_item (compiled head_dims, a block's scores on the stack, the state of an
// item's query heads on the stack); make_items gives them runs of kv heads exactly then.
inline bool has_row_path(int64_t head_dim, int64_t block_size, int64_t num_heads, int64_t num_kv_heads) {
  return (head_dim == 32 || head_dim == 64 || head_dim == 128) && block_size <= kMaxDecodeBlock &&
         num_heads / num_kv_heads <= kMaxRowHeads;
}

template <typename T>
inline void prefetch_rows(const T* rows, int64_t key_stride, int64_t block_size, int64_t span) {
  constexpr int64_t kLine = 64 / sizeof(T);  // elements per cache line
  for (int64_t t = 0; t < block_size; ++t)
    for (int64_t d = 0; d < span; d += kLine) __builtin_prefetch(rows + t * key_stride + d);
}

template <typename T, int HEAD_DIM>
void run_row_item(const Problem<T>& P, const Item& it) {
  constexpr int64_t D = HEAD_DIM;
  const int64_t group = P.num_heads / P.num_kv_heads, BS = P.block_size;
  const int64_t tok0 = P.query_start_loc[it.seq];
  const int64_t q_len = P.query_start_loc[it.seq + 1] - tok0;
  const int64_t p = P.seq_lens[it.seq] - q_len + it.q_begin;  // the row's position
  const int64_t lo = key_lo(p, P.window), hi = p + 1;           // the keys it sees: [lo, hi)
  const int32_t* table = P.block_tables + it.seq * P.table_stride;
  const int64_t key_stride = P.num_kv_heads * D;
  const int64_t h0 = it.kv_head * group, nq = (it.kv_head_end - it.kv_head) * group;  // query heads [h0, h0 + nq)
  const int64_t span = (it.kv_head_end - it.kv_head) * D;  // one key's elements for the item's kv heads
  const float* q_row = P.q + (tok0 + it.q_begin) * P.q_stride_token;
  float qs[kMaxRowHeads][D], acc[kMaxRowHeads][2][D], m[kMaxRowHeads], l[kMaxRowHeads];
  for (int64_t j = 0; j < nq; ++j) {
    for (int64_t d = 0; d < D; ++d) {
      qs[j][d] = q_row[(h0 + j) * P.q_stride_head + d] * P.scale;  // scores come out scaled
      acc[j][0][d] = acc[j][1][d] = 0.f;
    }
    m[j] = -std::numeric_limits<float>::infinity();
    l[j] = 0.f;
  }
  float scores[kMaxDecodeBlock];
  for (int64_t blk = lo / BS; blk * BS < hi; ++blk) {
    const int64_t base = blk * BS;
    const int64_t offset = (static_cast<int64_t>(table[blk]) * BS * P.num_kv_heads + it.kv_head) * D;
    if ((blk + 1) * BS < hi) {
      const int64_t next = (static_cast<int64_t>(table[blk + 1]) * BS * P.num_kv_heads + it.kv_head) * D;
      prefetch_rows(P.k + next, key_stride, BS, span);
      prefetch_rows(P.v + next, key_stride, BS, span);
    }
    const int64_t t0 = std::max<int64_t>(lo - base, 0), t1 = std::min<int64_t>(hi - base, BS);
    for (int64_t j = 0; j < nq; ++j) {
      const int64_t g = j / group;  // the kv head, relative to it.kv_head
      const T* k_rows = P.k + offset + g * D;
      const T* v_rows = P.v + offset + g * D;
      const float* q = qs[j];
      float block_max = -std::numeric_limits<float>::infinity();
      for (int64_t t = t0; t < t1; ++t) {
        scores[t] = dot(q, k_rows + t * key_stride, D);
        block_max = std::max(block_max, scores[t]);
      }
      float a0[D], a1[D];  // this head's accumulator, in registers for the block
      for (int64_t d = 0; d < D; ++d) {
        a0[d] = acc[j][0][d];
        a1[d] = acc[j][1][d];
      }
      if (block_max > m[j]) {  // rescale what was accumulated under the old max (exp(-inf) = 0 on the first block)
        const float alpha = std::exp(m[j] - block_max);
        l[j] *= alpha;
        scale_in_place(a0, alpha, D);
        scale_in_place(a1, alpha, D);
        m[j] = block_max;
      }
      l[j] += exp_and_sum(scores + t0, m[j], t1 - t0);
      int64_t t = t0;
      for (; t + 1 < t1; t += 2) {
        axpy(scores[t], v_rows + t * key_stride, a0, D);
        axpy(scores[t + 1], v_rows + (t + 1) * key_stride, a1, D);
      }
      if (t < t1) axpy(scores[t], v_rows + t * key_stride, a0, D);
      for (int64_t d = 0; d < D; ++d) {
        acc[j][0][d] = a0[d];
        acc[j][1][d] = a1[d];
      }
    }
  }
  for (int64_t j = 0; j < nq; ++j) {
    float* o = P.out + ((tok0 + it.q_begin) * P.num_heads + h0 + j) * D;
    const float inv = 1.f / l[j];  // l >= 1: the row sees at least its own key
    for (int64_t d = 0; d < D; ++d) o[d] = (acc[j][0][d] + acc[j][1][d]) * inv;
  }
}

// Work items: tiles of <= kQueryTile rows per (sequence, kv head); a single-row tile takes a run of kv heads, as many
// as keep >= kItemsPerThread items per thread (fewer, longer passes over each block; enough items to balance).
constexpr int64_t kItemsPerThread = 8;

std::vector<Item> make_items(const int32_t* qsl, const int32_t* seq_lens, int64_t num_seqs, int64_t num_heads,
                             int64_t num_kv_heads, int64_t window, int64_t threads, bool row_path) {
  const int64_t group = num_heads / num_kv_heads;
  const int64_t wanted = std::max<int64_t>(1, num_seqs * num_kv_heads / (kItemsPerThread * threads));
  const int64_t run = std::clamp<int64_t>(std::min(wanted, kMaxRowHeads / group), 1, num_kv_heads);
  std::vector<Item> items;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t q_len = qsl[s + 1] - qsl[s], prefix = seq_lens[s] - q_len;
    for (int64_t b = 0; b < q_len; b += kQueryTile) {
      const int64_t e = std::min(q_len, b + kQueryTile);
      const int64_t keys = prefix + e - key_lo(prefix + b, window);
      const int64_t step = e - b == 1 && row_path ? run : 1;
      for (int64_t g = 0; g < num_kv_heads; g += step) {
        const int64_t g_end = std::min(num_kv_heads, g + step);
        items.push_back({s, g, g_end, b, e, (e - b) * keys * (g_end - g)});
      }
    }
  }
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.cost > b.cost; });
  return items;
}

template <typename T, int HEAD_DIM>
void run_all(const Problem<T>& P, const std::vector<Item>& items) {
  std::atomic<int64_t> next{0};
  const int64_t n = static_cast<int64_t>(items.size());
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), n);
  const bool row_path = has_row_path(P.head_dim, P.block_size, P.num_heads, P.num_kv_heads);
  // One chunk per thread; each thread then takes items from the shared counter (dynamic balance).
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    RowState st;
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
      if constexpr (HEAD_DIM > 0) {
        if (items[i].q_end - items[i].q_begin == 1 && row_path) {
          run_row_item<T, HEAD_DIM>(P, items[i]);
          continue;
        }
      }
      run_item<T, HEAD_DIM>(P, items[i], st);
    }
  });
}

void check_inputs(const at::Tensor& query, const at::Tensor& k_cache, const at::Tensor& v_cache,
                  const at::Tensor& qsl, const at::Tensor& seq_lens, const at::Tensor& tables) {
  TORCH_CHECK(query.device().is_cpu() && k_cache.device().is_cpu(), "rho_serve::paged_attention runs on CPU tensors");
  TORCH_CHECK(query.dim() == 3 && query.scalar_type() == at::kFloat && query.stride(2) == 1,
              "query must be float32 (num_tokens, num_heads, head_dim) with a contiguous last dim");
  TORCH_CHECK(k_cache.dim() == 4 && k_cache.sizes() == v_cache.sizes() && k_cache.is_contiguous() &&
                  v_cache.is_contiguous() && k_cache.scalar_type() == v_cache.scalar_type(),
              "k_cache and v_cache must be contiguous (num_blocks, block_size, num_kv_heads, head_dim) of one dtype");
  TORCH_CHECK(k_cache.scalar_type() == at::kFloat || k_cache.scalar_type() == at::kBFloat16,
              "the KV cache must be float32 or bfloat16");
  TORCH_CHECK(k_cache.size(3) == query.size(2) && query.size(1) % k_cache.size(2) == 0,
              "head_dim must match and num_heads must be a multiple of num_kv_heads");
  for (const auto* t : {&qsl, &seq_lens, &tables})
    TORCH_CHECK(t->scalar_type() == at::kInt && t->is_contiguous() && t->device().is_cpu(),
                "attention metadata must be contiguous int32 CPU tensors");
  TORCH_CHECK(tables.dim() == 2 && qsl.numel() == seq_lens.numel() + 1 && tables.size(0) >= seq_lens.numel(),
              "query_start_loc must be (num_seqs + 1,) and block_tables (num_seqs, max_blocks)");
}

// Every index the kernel will follow is checked here, so a bad table raises instead of reading out of bounds.
void check_metadata(const int32_t* qsl, const int32_t* seq_lens, const int32_t* tables, int64_t num_seqs,
                    int64_t table_stride, int64_t num_tokens, int64_t num_blocks, int64_t block_size) {
  TORCH_CHECK(qsl[0] == 0 && qsl[num_seqs] == num_tokens, "query_start_loc must run from 0 to num_tokens");
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t q_len = qsl[s + 1] - qsl[s], len = seq_lens[s];
    TORCH_CHECK(q_len >= 0 && len >= q_len, "sequence ", s, ": seq_len ", len, " < its ", q_len, " new tokens");
    const int64_t used = (len + block_size - 1) / block_size;
    TORCH_CHECK(used <= table_stride, "sequence ", s, " needs ", used, " blocks, its table has ", table_stride);
    for (int64_t b = 0; b < used; ++b) {
      const int64_t id = tables[s * table_stride + b];
      TORCH_CHECK(id >= 0 && id < num_blocks, "sequence ", s, ": block id ", id, " out of range");
    }
  }
}

template <typename T>
void dispatch(const at::Tensor& query, const at::Tensor& k_cache, const at::Tensor& v_cache, at::Tensor& out,
              const int32_t* qsl, const int32_t* lens, const at::Tensor& tables, double scale, int64_t window,
              const std::vector<Item>& items) {
  Problem<T> P{query.data_ptr<float>(), query.stride(0), query.stride(1), out.data_ptr<float>(),
               k_cache.data_ptr<T>(), v_cache.data_ptr<T>(), qsl, lens, tables.data_ptr<int32_t>(),
               tables.size(1), query.size(1), k_cache.size(2), query.size(2), k_cache.size(1),
               static_cast<float>(scale), window};
  switch (P.head_dim) {
    case 32: return run_all<T, 32>(P, items);
    case 64: return run_all<T, 64>(P, items);
    case 128: return run_all<T, 128>(P, items);
    default: return run_all<T, 0>(P, items);
  }
}

at::Tensor paged_attention(const at::Tensor& query, const at::Tensor& k_cache, const at::Tensor& v_cache,
                           const at::Tensor& query_start_loc, const at::Tensor& seq_lens,
                           const at::Tensor& block_tables, double scale, int64_t sliding_window) {
  check_inputs(query, k_cache, v_cache, query_start_loc, seq_lens, block_tables);
  const int64_t num_seqs = seq_lens.numel();
  const int32_t* qsl = query_start_loc.data_ptr<int32_t>();
  const int32_t* lens = seq_lens.data_ptr<int32_t>();
  check_metadata(qsl, lens, block_tables.data_ptr<int32_t>(), num_seqs, block_tables.size(1), query.size(0),
                 k_cache.size(0), k_cache.size(1));
  auto out = at::empty({query.size(0), query.size(1), query.size(2)}, query.options());
  const auto items = make_items(qsl, lens, num_seqs, query.size(1), k_cache.size(2), sliding_window,
                                at::get_num_threads(),
                                has_row_path(query.size(2), k_cache.size(1), query.size(1), k_cache.size(2)));
  if (k_cache.scalar_type() == at::kFloat)
    dispatch<float>(query, k_cache, v_cache, out, qsl, lens, block_tables, scale, sliding_window, items);
  else
    dispatch<c10::BFloat16>(query, k_cache, v_cache, out, qsl, lens, block_tables, scale, sliding_window, items);
  return out;
}

}  // namespace
}  // namespace rho_serve

TORCH_LIBRARY(rho_serve, m) {
  m.def(
      "paged_attention(Tensor query, Tensor k_cache, Tensor v_cache, Tensor query_start_loc, Tensor seq_lens, "
      "Tensor block_tables, float scale, int sliding_window) -> Tensor");
}

TORCH_LIBRARY_IMPL(rho_serve, CPU, m) { m.impl("paged_attention", &rho_serve::paged_attention); }

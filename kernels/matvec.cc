// Skinny matrix products for decoding on the CPU: y [M, N] float32 = x [M, K] float32 times a weight matrix in
// float32, bfloat16, or int8 with either a float32 scale per output channel or a float16 scale per block of 32
// weights along K (llama.cpp's Q8_0), for small M (a decode step's batch).
//
// Why: XLA:CPU runs a bfloat16 matrix-vector product at 1-2 GB/s (a scalar conversion loop) and a float32 one
// with 8 rows at about half the memory bandwidth; a decode step is nothing but such products. These kernels
// stream each weight once, converting in registers, on the threads of XLA's intra-op pool.
//
// Two layouts, both row-major:
//   "kn": w [K, N] (a Linear kernel, flattened): y[m, n] = sum_k x[m, k] w[k, n]. The K rows are split into
//         contiguous parts (one per thread, each read front to back); every part accumulates blocks of
//         kBlockRows rows into a scratch block before adding it to its partial sum, so an output is a sum of
//         short sums (rounding error like a blocked dot, not a sequential sum over K). Parts start at multiples
//         of kBlockRows. Partials are added at the end, and an int8 weight's column scale applied then; block
//         scales [K/32, N] multiply each block's register sum before it joins the partial sum.
//   "nk": w [N, K] (a tied LM head: the embedding): y[m, n] = dot(x[m, :], w[n, :]), 16 lanes per dot; the
//         N rows are split among the threads. An int8 weight's row scale multiplies each dot; block scales
//         [N, K/32] multiply the weights of each 32-element tile (one block) as they are loaded.
// Weight types: float, uint16_t holding bfloat16 bits (widened by a 16-bit shift, which is exact), int8_t.
// Written with GCC vector extensions: compiled with -march=native they become AVX-512 (or AVX2) code. The two
// widenings GCC would scalarise (int8 -> float, float16 -> float: 16 scalar conversions per vector) use the
// AVX-512 / AVX2 / F16C instructions where the machine has them.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kLanes = 16;
constexpr int64_t kTile = 2 * kLanes;  // elements of w per row and load: two vectors
constexpr int64_t kBlockRows = 32;     // "kn": rows of w summed in registers before the partial sum
constexpr int64_t kScaleBlock = 32;    // weights per float16 block scale (Q8_0): one kn block, one nk tile
static_assert(kScaleBlock == kBlockRows && kScaleBlock == kTile, "a block scale covers one block / one tile");
constexpr int64_t kAhead = 32;         // "kn": rows ahead whose tile is prefetched (the next block's)
constexpr int64_t kMaxRows = 8;        // rows of x per register tile
constexpr int64_t kMinRowsPerPart = 128;

typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
// The same vectors at element alignment: loads and stores through these need no aligned address.
typedef float vf_u __attribute__((vector_size(64), aligned(4)));
typedef uint32_t vu32_u __attribute__((vector_size(64), aligned(2)));
typedef uint32_t vu32 __attribute__((vector_size(64)));
typedef int8_t vs8_u __attribute__((vector_size(16), aligned(1)));

inline vf load(const float* p) { return *reinterpret_cast<const vf_u*>(p); }
inline void store(float* p, vf v) { *reinterpret_cast<vf_u*>(p) = v; }
inline vf as_float(vu32 u) { return reinterpret_cast<vf&>(u); }

// load_tile: the kTile elements at p as two float vectors, in the type's tile order.
//   float, int8: natural order (elements 0-15, then 16-31).
//   bfloat16: one 64-byte load read as 16 words of two bfloat16 each: the low halves (the even elements) shifted
//   up, the high halves (the odd elements) masked, so the vectors hold elements 0, 2, ..., 30 and 1, 3, ..., 31.
//   No shuffles in the inner loop; the order is undone once per output tile ("kn") or applied to x ("nk").
inline void load_tile(const float* p, vf& a, vf& b) {
  a = load(p);
  b = load(p + kLanes);
}
inline void load_tile(const uint16_t* p, vf& a, vf& b) {
  vu32 u = *reinterpret_cast<const vu32_u*>(p);
  a = as_float(u << 16);
  b = as_float(u & 0xFFFF0000u);
}
// 16 int8 at p as floats (exact).
inline vf widen(const int8_t* p) {
#if defined(__AVX512F__)
  return (vf)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#elif defined(__AVX2__)
  vf out;
  __m256 lo = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  __m256 hi = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8))));
  std::memcpy(&out, &lo, sizeof lo);
  std::memcpy(reinterpret_cast<char*>(&out) + sizeof lo, &hi, sizeof hi);
  return out;
#else
  return __builtin_convertvector(*reinterpret_cast<const vs8_u*>(p), vf);
#endif
}
inline void load_tile(const int8_t* p, vf& a, vf& b) {
  a = widen(p);
  b = widen(p + kLanes);
}

// IEEE binary16 bits -> float (exact), for the block scales.
inline float half(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, frac = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0x1Fu) {
    bits = sign | 0x7F800000u | (frac << 13);  // inf, nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (frac << 13);
  } else {  // zero or subnormal: frac * 2^-24, exact in float
    float f = float(frac) * 5.9604644775390625e-8f;
    std::memcpy(&bits, &f, sizeof f);
    bits |= sign;
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

// 16 binary16 values at p as floats (exact).
inline vf widen_half(const uint16_t* p) {
#if defined(__AVX512F__)
  return (vf)_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#else
  vf out;
  for (int64_t i = 0; i < kLanes; ++i) out[i] = half(p[i]);
  return out;
#endif
}

template <typename W>
constexpr bool kEvenOdd = false;
template <>
constexpr bool kEvenOdd<uint16_t> = true;

// Two tile-order vectors back to natural order (lo: elements 0-15, hi: 16-31).
template <typename W>
inline void natural(vf a, vf b, vf& lo, vf& hi) {
  if constexpr (kEvenOdd<W>) {
    const vi lo_idx = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
    const vi hi_idx = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    lo = __builtin_shuffle(a, b, lo_idx);
    hi = __builtin_shuffle(a, b, hi_idx);
  } else {
    lo = a;
    hi = b;
  }
}

// Element i of a tile in tile order -> its natural position.
template <typename W>
inline int64_t tile_position(int64_t i) {
  if constexpr (kEvenOdd<W>) return i < kLanes ? 2 * i : 2 * (i - kLanes) + 1;
  return i;
}

inline float scalar(float v) { return v; }
inline float scalar(uint16_t v) {
  uint32_t u = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline float scalar(int8_t v) { return float(v); }

inline float hsum(vf v) {
  float lanes[kLanes];
  std::memcpy(lanes, &v, sizeof v);
  for (int64_t width = kLanes / 2; width >= 1; width /= 2)
    for (int64_t i = 0; i < width; ++i) lanes[i] += lanes[i + width];
  return lanes[0];
}

// Runs fn(part) for part in [0, parts) on the pool and the calling thread. Whoever is free claims the next
// unclaimed part, the caller included, so the call finishes even when no pool thread ever starts; the caller
// then waits only for parts already running. A task that starts late finds nothing left and touches nothing.
struct Job {
  explicit Job(int64_t parts, std::function<void(int64_t)> fn) : parts(parts), fn(std::move(fn)) {}
  void work() {
    for (int64_t p; (p = next.fetch_add(1)) < parts;) {
      fn(p);
      done.fetch_add(1, std::memory_order_release);
    }
  }
  const int64_t parts;
  const std::function<void(int64_t)> fn;
  std::atomic<int64_t> next{0}, done{0};
};

void run_parts(ffi::ThreadPool& pool, int64_t parts, std::function<void(int64_t)> fn) {
  if (parts <= 1) {
    fn(0);
    return;
  }
  auto job = std::make_shared<Job>(parts, std::move(fn));
  for (int64_t i = 1; i < parts; ++i) pool.Schedule([job] { job->work(); });
  job->work();
  while (job->done.load(std::memory_order_acquire) < parts) std::this_thread::yield();
}

int64_t part_count(ffi::ThreadPool& pool, int64_t rows) {
  int64_t threads = std::max<int64_t>(1, pool.num_threads());
  return std::clamp<int64_t>(rows / kMinRowsPerPart, 1, threads);
}

// fn(std::integral_constant<int, R>{}) for R = min(rows, kMaxRows): a register tile's row count as a constant.
template <typename Fn>
inline void with_rows(int64_t rows, Fn&& fn) {
  switch (std::min(kMaxRows, rows)) {
    case 1: fn(std::integral_constant<int, 1>{}); break;
    case 2: fn(std::integral_constant<int, 2>{}); break;
    case 3: fn(std::integral_constant<int, 3>{}); break;
    case 4: fn(std::integral_constant<int, 4>{}); break;
    case 5: fn(std::integral_constant<int, 5>{}); break;
    case 6: fn(std::integral_constant<int, 6>{}); break;
    case 7: fn(std::integral_constant<int, 7>{}); break;
    default: fn(std::integral_constant<int, 8>{}); break;
  }
}

// Independent accumulator chains per row of x. With few rows, each sum is one chain of dependent FMAs and the
// FMA latency (4 cycles), not the memory, sets the pace: a batch-1 int8 product ran at the speed of a
// cache-resident one. More chains (alternate rows of w in "kn", alternate tiles in "nk") fill the pipeline.
template <int R>
constexpr int kChains = R == 1 ? 4 : R <= 3 ? 2 : 1;

// acc[m, j:j+kTile] += x[m, k0:k1] w[k0:k1, j:j+kTile] for R rows m of x, the sum held in registers and
// multiplied by bs[j:j+kTile] (the block's float16 scales) when bs is given.
template <typename W, int R>
__attribute__((always_inline)) inline void kn_tile(const float* x, const W* w, const uint16_t* bs, float* acc,
                                                   int64_t k_dim, int64_t n, int64_t k0, int64_t k1, int64_t j) {
  constexpr int C = kChains<R>;
  vf lo[C][R] = {}, hi[C][R] = {};
  auto row = [&](int c, int64_t k) {
    vf a, b;
    // A block reads kBlockRows rows at a stride of N: more streams than the hardware prefetcher follows.
    // The last block's rows have no next block to prefetch (past w: another buffer's memory, read for nothing).
    if (k + kAhead < k_dim) {
      const char* ahead = reinterpret_cast<const char*>(w + (k + kAhead) * n + j);
      __builtin_prefetch(ahead);
      if constexpr (sizeof(W) * kTile > 64) __builtin_prefetch(ahead + 64);
    }
    load_tile(w + k * n + j, a, b);
    for (int m = 0; m < R; ++m) {
      const float xv = x[m * k_dim + k];
      lo[c][m] += a * xv;
      hi[c][m] += b * xv;
    }
  };
  int64_t k = k0;
  for (; k + C <= k1; k += C)
    for (int c = 0; c < C; ++c) row(c, k + c);
  for (; k < k1; ++k) row(0, k);
  vf s_lo = {}, s_hi = {};
  if (bs) {
    s_lo = widen_half(bs + j);
    s_hi = widen_half(bs + j + kLanes);
  }
  for (int m = 0; m < R; ++m) {
    for (int c = 1; c < C; ++c) {
      lo[0][m] += lo[c][m];
      hi[0][m] += hi[c][m];
    }
    vf first, second;
    natural<W>(lo[0][m], hi[0][m], first, second);
    if (bs) {
      first *= s_lo;
      second *= s_hi;
    }
    float* out = acc + m * n + j;
    store(out, load(out) + first);
    store(out + kLanes, load(out + kLanes) + second);
  }
}

// block_scale: the float16 scales [K/32, N] of an int8 weight in Q8_0 blocks, else nullptr. k0 is a multiple
// of kBlockRows, so every block kb here is one scale row.
template <typename W, int R>
void kn_rows(const float* x, const W* w, const uint16_t* block_scale, float* acc, int64_t k_dim, int64_t n,
             int64_t k0, int64_t k1) {
  const int64_t nt = n / kTile * kTile;
  for (int64_t kb = k0; kb < k1; kb += kBlockRows) {
    const int64_t kend = std::min(kb + kBlockRows, k1);
    const uint16_t* bs = block_scale ? block_scale + kb / kBlockRows * n : nullptr;
    for (int64_t j = 0; j < nt; j += kTile) kn_tile<W, R>(x, w, bs, acc, k_dim, n, kb, kend, j);
    for (int64_t j = nt; j < n; ++j)
      for (int m = 0; m < R; ++m) {
        float s = 0.0f;
        for (int64_t k = kb; k < kend; ++k) s += scalar(w[k * n + j]) * x[m * k_dim + k];
        acc[m * n + j] += bs ? s * half(bs[j]) : s;
      }
  }
}

// acc [M, N] += x[:, k0:k1] w[k0:k1, :], kMaxRows rows of x at a time.
template <typename W>
void kn_part(const float* x, const W* w, const uint16_t* bs, float* acc, int64_t m_rows, int64_t k_dim, int64_t n,
             int64_t k0, int64_t k1) {
  for (int64_t m0 = 0; m0 < m_rows; m0 += kMaxRows) {
    const float* xs = x + m0 * k_dim;
    float* as = acc + m0 * n;
    with_rows(m_rows - m0, [&](auto r) { kn_rows<W, decltype(r)::value>(xs, w, bs, as, k_dim, n, k0, k1); });
  }
}

// The scales of an int8 weight: one float32 per output channel (scale [N]), or one float16 per block of 32
// weights along K (block_scale: [K/32, N] for "kn", [N, K/32] for "nk"); neither for other weights.
struct Scales {
  const float* channel = nullptr;
  const uint16_t* block = nullptr;
};

// An error message when the block scales' dimensions do not fit w, else nullptr.
const char* check_blocks(ffi::AnyBuffer::Dimensions sd, int64_t k_dim, int64_t n, bool kn_layout) {
  if (k_dim % kScaleBlock) return "matvec: int8 weights in blocks of 32 need K a multiple of 32";
  const int64_t blocks = k_dim / kScaleBlock;
  const bool fits = sd.size() == 2 && (kn_layout ? sd[0] == blocks && sd[1] == n : sd[0] == n && sd[1] == blocks);
  if (!fits)
    return kn_layout ? "matvec kn: expected block scales [K/32, N]" : "matvec nk: expected block scales [N, K/32]";
  return nullptr;
}

template <typename W>
ffi::Error kn(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::AnyBuffer w, Scales scale,
              ffi::ResultBuffer<ffi::F32> y) {
  auto xd = x.dimensions(), wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 2 || xd[1] != wd[0])
    return ffi::Error::InvalidArgument("matvec kn: expected x [M, K] and w [K, N]");
  const int64_t m_rows = xd[0], k_dim = xd[1], n = wd[1];
  const float* xp = x.typed_data();
  const W* wp = static_cast<const W*>(w.untyped_data());
  const int64_t parts = part_count(pool, k_dim);
  // Parts start at multiples of kBlockRows, so that a part's blocks are the weight's blocks of 32 rows.
  const int64_t per = ((k_dim + parts - 1) / parts + kBlockRows - 1) / kBlockRows * kBlockRows;
  std::vector<float> partials(parts * m_rows * n, 0.0f);
  run_parts(pool, parts, [&](int64_t p) {
    const int64_t k0 = std::min(p * per, k_dim), k1 = p == parts - 1 ? k_dim : std::min(k0 + per, k_dim);
    kn_part(xp, wp, scale.block, partials.data() + p * m_rows * n, m_rows, k_dim, n, k0, k1);
  });
  float* out = y->typed_data();
  for (int64_t i = 0; i < m_rows * n; ++i) {
    float s = partials[i];
    for (int64_t p = 1; p < parts; ++p) s += partials[p * m_rows * n + i];
    out[i] = scale.channel ? s * scale.channel[i % n] : s;
  }
  return ffi::Error::Success();
}

// out[m, r] = x[m, :] . w[r, :] for R rows m of x and the rows r in [n0, n1) of w [N, K]. xt is x with each
// tile's elements in the weight type's tile order.
template <typename W, int R>
void nk_rows(const float* x, const float* xt, const W* w, Scales scale, float* out, int64_t k_dim, int64_t n,
             int64_t n0, int64_t n1) {
  constexpr int C = kChains<R>;
  const int64_t kt = k_dim / kTile * kTile;
  for (int64_t r = n0; r < n1; ++r) {
    const W* wr = w + r * k_dim;
    const uint16_t* bs = scale.block ? scale.block + r * (k_dim / kScaleBlock) : nullptr;
    vf lo[C][R] = {}, hi[C][R] = {};
    auto tile = [&](int c, int64_t k) {
      vf a, b;
      load_tile(wr + k, a, b);
      if (bs) {  // a tile is one block: its weights times the block's scale
        const float s = half(bs[k / kScaleBlock]);
        a *= s;
        b *= s;
      }
      for (int m = 0; m < R; ++m) {
        lo[c][m] += a * load(xt + m * k_dim + k);
        hi[c][m] += b * load(xt + m * k_dim + k + kLanes);
      }
    };
    int64_t k = 0;
    for (; k + C * kTile <= kt; k += C * kTile)
      for (int c = 0; c < C; ++c) tile(c, k + c * kTile);
    for (; k < kt; k += kTile) tile(0, k);
    for (int m = 0; m < R; ++m) {
      for (int c = 1; c < C; ++c) {
        lo[0][m] += lo[c][m];
        hi[0][m] += hi[c][m];
      }
      float s = hsum(lo[0][m] + hi[0][m]);
      for (int64_t k = kt; k < k_dim; ++k) s += scalar(wr[k]) * x[m * k_dim + k];
      out[m * n + r] = scale.channel ? s * scale.channel[r] : s;
    }
  }
}

template <typename W>
void nk_part(const float* x, const float* xt, const W* w, Scales scale, float* out, int64_t m_rows,
             int64_t k_dim, int64_t n, int64_t n0, int64_t n1) {
  for (int64_t m0 = 0; m0 < m_rows; m0 += kMaxRows) {
    const float *xs = x + m0 * k_dim, *xts = xt + m0 * k_dim;
    float* os = out + m0 * n;
    with_rows(m_rows - m0, [&](auto r) { nk_rows<W, decltype(r)::value>(xs, xts, w, scale, os, k_dim, n, n0, n1); });
  }
}

template <typename W>
ffi::Error nk(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::AnyBuffer w, Scales scale,
              ffi::ResultBuffer<ffi::F32> y) {
  auto xd = x.dimensions(), wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 2 || xd[1] != wd[1])
    return ffi::Error::InvalidArgument("matvec nk: expected x [M, K] and w [N, K]");
  const int64_t m_rows = xd[0], k_dim = xd[1], n = wd[0];
  const float* xp = x.typed_data();
  const W* wp = static_cast<const W*>(w.untyped_data());
  float* out = y->typed_data();
  const int64_t parts = part_count(pool, n);
  const int64_t per = (n + parts - 1) / parts;
  // x with every full tile in the weight's tile order (the tail stays natural and is read from x).
  std::vector<float> xt(xp, xp + m_rows * k_dim);
  for (int64_t m = 0; m < m_rows; ++m)
    for (int64_t k = 0; k + kTile <= k_dim; k += kTile)
      for (int64_t i = 0; i < kTile; ++i) xt[m * k_dim + k + i] = xp[m * k_dim + k + tile_position<W>(i)];
  run_parts(pool, parts, [&](int64_t p) {
    const int64_t n0 = std::min(p * per, n), n1 = std::min(n0 + per, n);
    nk_part(xp, xt.data(), wp, scale, out, m_rows, k_dim, n, n0, n1);
  });
  return ffi::Error::Success();
}

using Impl = ffi::Error (*)(ffi::ThreadPool, ffi::Buffer<ffi::F32>, ffi::AnyBuffer, Scales,
                             ffi::ResultBuffer<ffi::F32>);

template <Impl F>
ffi::Error unscaled(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::AnyBuffer w, ffi::ResultBuffer<ffi::F32> y) {
  return F(pool, x, w, Scales{}, y);
}

template <Impl F, bool KnLayout>
ffi::Error scaled(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::AnyBuffer w, ffi::Buffer<ffi::F32> scale,
                  ffi::ResultBuffer<ffi::F32> y) {
  auto wd = w.dimensions(), sd = scale.dimensions();
  if (wd.size() == 2 && (sd.size() != 1 || sd[0] != (KnLayout ? wd[1] : wd[0])))
    return ffi::Error::InvalidArgument("matvec: expected a scale [N], one per output channel");
  return F(pool, x, w, Scales{scale.typed_data(), nullptr}, y);
}

template <Impl F, bool KnLayout>
ffi::Error blocked(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::AnyBuffer w, ffi::Buffer<ffi::F16> scale,
                   ffi::ResultBuffer<ffi::F32> y) {
  auto wd = w.dimensions();
  if (wd.size() == 2) {  // x is checked against w by F
    const int64_t k_dim = KnLayout ? wd[0] : wd[1], n = KnLayout ? wd[1] : wd[0];
    if (const char* problem = check_blocks(scale.dimensions(), k_dim, n, KnLayout))
      return ffi::Error::InvalidArgument(problem);
  }
  return F(pool, x, w, Scales{nullptr, reinterpret_cast<const uint16_t*>(scale.untyped_data())}, y);
}

}  // namespace

#define JM_UNSCALED(name, impl)                                                                     \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, unscaled<impl>,                                               \
                                ffi::Ffi::Bind()                                                    \
                                    .Ctx<ffi::ThreadPool>()                                         \
                                    .Arg<ffi::Buffer<ffi::F32>>()                                   \
                                    .Arg<ffi::AnyBuffer>()                                          \
                                    .Ret<ffi::Buffer<ffi::F32>>());
#define JM_SCALED(name, impl, kn_layout)                                                            \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, (scaled<impl, kn_layout>),                                    \
                                ffi::Ffi::Bind()                                                    \
                                    .Ctx<ffi::ThreadPool>()                                         \
                                    .Arg<ffi::Buffer<ffi::F32>>()                                   \
                                    .Arg<ffi::AnyBuffer>()                                          \
                                    .Arg<ffi::Buffer<ffi::F32>>()                                   \
                                    .Ret<ffi::Buffer<ffi::F32>>());
#define JM_BLOCKED(name, impl, kn_layout)                                                           \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, (blocked<impl, kn_layout>),                                   \
                                ffi::Ffi::Bind()                                                    \
                                    .Ctx<ffi::ThreadPool>()                                         \
                                    .Arg<ffi::Buffer<ffi::F32>>()                                   \
                                    .Arg<ffi::AnyBuffer>()                                          \
                                    .Arg<ffi::Buffer<ffi::F16>>()                                   \
                                    .Ret<ffi::Buffer<ffi::F32>>());

JM_UNSCALED(jm_matvec_kn_f32, kn<float>)
JM_UNSCALED(jm_matvec_kn_bf16, kn<uint16_t>)
JM_SCALED(jm_matvec_kn_s8, kn<int8_t>, true)
JM_BLOCKED(jm_matvec_kn_s8_b32, kn<int8_t>, true)
JM_UNSCALED(jm_matvec_nk_f32, nk<float>)
JM_UNSCALED(jm_matvec_nk_bf16, nk<uint16_t>)
JM_SCALED(jm_matvec_nk_s8, nk<int8_t>, false)
JM_BLOCKED(jm_matvec_nk_s8_b32, nk<int8_t>, false)

// CPU kernel of block_orthogonalize (see include/fastspec/block_orthogonalize.h).
//
// P is cut into tiles of kTile entries. A tile of W is transposed into a float64 scratch
// [B][kTile] (unit-stride columns), and every basis row touches the tile while it is in L1:
// phase 1 accumulates C = V W per thread (partials summed in thread order: deterministic for a
// given thread count), phase 2 updates the tile column by column and writes it back. The inner
// loops are unit-stride float64 dot products / axpys, compiled for AVX-512, AVX2 and the
// baseline (runtime dispatch through GCC function multiversioning on x86-64).
#include <algorithm>
#include <vector>

#include "fastspec/block_orthogonalize.h"

#ifdef FASTSPEC_WITH_OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FASTSPEC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTSPEC_CLONES
#endif

namespace fastspec {
namespace {

constexpr int64_t kTile = 256;                 // entries of P per tile: B x 2 KiB of scratch
constexpr int64_t kMinParallelWork = 1 << 16;  // n * P * B below this: one thread

int num_threads(int64_t work) {
#ifdef FASTSPEC_WITH_OPENMP
  return work < kMinParallelWork ? 1 : omp_get_max_threads();
#else
  (void)work;
  return 1;
#endif
}

int thread_id() {
#ifdef FASTSPEC_WITH_OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Load W[p0 : p0 + len, :] transposed into S[j * kTile + q] (float64).
template <typename T>
inline void load_tile(const T* W, int64_t B, int64_t p0, int64_t len, double* S) {
  for (int64_t q = 0; q < len; ++q) {
    const T* w = W + (p0 + q) * B;
    for (int64_t j = 0; j < B; ++j) S[j * kTile + q] = static_cast<double>(w[j]);
  }
}

// acc[i, j] += V[i, p0 : p0 + len] . S[j]; sq[j] += ||S[j]||^2.
template <typename T>
__attribute__((always_inline)) inline void coef_tile_impl(const T* V, int64_t P, int64_t n, int64_t B,
                                                          int64_t p0, int64_t len, const double* S,
                                                          double* acc, double* sq) {
  for (int64_t j = 0; j < B; ++j) {
    const double* s = S + j * kTile;
    double t = 0.0;
#pragma omp simd reduction(+ : t)
    for (int64_t q = 0; q < len; ++q) t += s[q] * s[q];
    sq[j] += t;
  }
  for (int64_t i = 0; i < n; ++i) {
    const T* row = V + i * P + p0;
    for (int64_t j = 0; j < B; ++j) {
      const double* s = S + j * kTile;
      double t = 0.0;
#pragma omp simd reduction(+ : t)
      for (int64_t q = 0; q < len; ++q) t += static_cast<double>(row[q]) * s[q];
      acc[i * B + j] += t;
    }
  }
}

// S[j] -= sum_i C[i, j] V[i, p0 : p0 + len].
template <typename T>
__attribute__((always_inline)) inline void update_tile_impl(const T* V, int64_t P, int64_t n, int64_t B,
                                                            int64_t p0, int64_t len, const double* C,
                                                            double* S) {
  for (int64_t i = 0; i < n; ++i) {
    const T* row = V + i * P + p0;
    for (int64_t j = 0; j < B; ++j) {
      const double c = C[i * B + j];
      double* s = S + j * kTile;
#pragma omp simd
      for (int64_t q = 0; q < len; ++q) s[q] -= c * static_cast<double>(row[q]);
    }
  }
}

FASTSPEC_CLONES void coef_tile(const double* V, int64_t P, int64_t n, int64_t B, int64_t p0, int64_t len,
                               const double* S, double* acc, double* sq) {
  coef_tile_impl(V, P, n, B, p0, len, S, acc, sq);
}
FASTSPEC_CLONES void coef_tile(const float* V, int64_t P, int64_t n, int64_t B, int64_t p0, int64_t len,
                               const double* S, double* acc, double* sq) {
  coef_tile_impl(V, P, n, B, p0, len, S, acc, sq);
}
FASTSPEC_CLONES void update_tile(const double* V, int64_t P, int64_t n, int64_t B, int64_t p0, int64_t len,
                                 const double* C, double* S) {
  update_tile_impl(V, P, n, B, p0, len, C, S);
}
FASTSPEC_CLONES void update_tile(const float* V, int64_t P, int64_t n, int64_t B, int64_t p0, int64_t len,
                                 const double* C, double* S) {
  update_tile_impl(V, P, n, B, p0, len, C, S);
}

template <typename T>
void run(const BlockOrthogonalizeArgs& a) {
  const T* V = static_cast<const T*>(a.V);
  const T* W = static_cast<const T*>(a.W);
  T* out = static_cast<T*>(a.W_out);
  const int64_t n = a.n, P = a.P, B = a.B;
  const int64_t tiles = (P + kTile - 1) / kTile;
  const int threads = num_threads(std::max<int64_t>(n, 1) * P * B);
  const int64_t nb = n * B;
  // per thread: C partial [n * B], then the two norm partials [2 * B]
  std::vector<double> part(static_cast<size_t>(threads) * static_cast<size_t>(nb + 2 * B), 0.0);

  // phase 1: C = V W (and ||W[:, j]||^2), static tiles per thread
#pragma omp parallel num_threads(threads)
  {
    std::vector<double> S(static_cast<size_t>(B * kTile));
    double* acc = part.data() + static_cast<size_t>(thread_id()) * static_cast<size_t>(nb + 2 * B);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t p0 = t * kTile, len = std::min(kTile, P - p0);
      load_tile(W, B, p0, len, S.data());
      coef_tile(V, P, n, B, p0, len, S.data(), acc, acc + nb);
    }
  }
  for (int64_t e = 0; e < nb; ++e) a.C[e] = 0.0;
  for (int64_t e = 0; e < 2 * B; ++e) a.sq_norms[e] = 0.0;
  for (int th = 0; th < threads; ++th) {
    const double* acc = part.data() + static_cast<size_t>(th) * static_cast<size_t>(nb + 2 * B);
    for (int64_t e = 0; e < nb; ++e) a.C[e] += acc[e];
    for (int64_t j = 0; j < B; ++j) a.sq_norms[j] += acc[nb + j];
  }

  // phase 2: W_out = W - V^T C (and ||W_out[:, j]||^2 of the rounded result)
#pragma omp parallel num_threads(threads)
  {
    std::vector<double> S(static_cast<size_t>(B * kTile));
    double* sq = part.data() + static_cast<size_t>(thread_id()) * static_cast<size_t>(nb + 2 * B) + nb + B;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t p0 = t * kTile, len = std::min(kTile, P - p0);
      load_tile(W, B, p0, len, S.data());
      update_tile(V, P, n, B, p0, len, a.C, S.data());
      for (int64_t q = 0; q < len; ++q) {
        T* o = out + (p0 + q) * B;
        for (int64_t j = 0; j < B; ++j) {
          o[j] = static_cast<T>(S[j * kTile + q]);
          const double r = static_cast<double>(o[j]);
          sq[j] += r * r;
        }
      }
    }
  }
  for (int th = 0; th < threads; ++th) {
    const double* sq = part.data() + static_cast<size_t>(th) * static_cast<size_t>(nb + 2 * B) + nb + B;
    for (int64_t j = 0; j < B; ++j) a.sq_norms[B + j] += sq[j];
  }
}

}  // namespace

void block_orthogonalize_cpu(const BlockOrthogonalizeArgs& a) {
  check_arg(a.n >= 0 && a.P >= 1 && a.B >= 1, "block_orthogonalize: need n >= 0, P >= 1, B >= 1");
  dispatch_float(a.dtype, [&](auto tag) { run<decltype(tag)>(a); });
}

}  // namespace fastspec

// CPU kernel of seq_gram (see include/fastspec/seq_gram.h). OpenMP over tiles of (i, j) sample
// pairs; within a pair, 4 x 4 blocks of position pairs (t, s) whose a- and g-dot products are
// accumulated in kLanes-wide partial sums (vectorised by the compiler), multiplied and summed
// into the pair's entry. Nothing of size T x S is stored.
#include <algorithm>
#include <cstdint>

#include "fastspec/seq_gram.h"

namespace fastspec {
namespace {

constexpr int64_t kRows = 4;  // positions of the i side per register block
constexpr int64_t kCols = 4;  // positions of the j side per register block
constexpr int64_t kTile = 8;  // samples per side of an OpenMP tile
constexpr int64_t kMinParallelWork = 1 << 20;

// The build targets the baseline ISA (portable wheels); the hot loop is cloned for AVX2 and
// AVX-512 and picked at load time, as BLAS libraries do.
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define FASTSPEC_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define FASTSPEC_INLINE __attribute__((always_inline)) inline
#else
#define FASTSPEC_CLONES
#define FASTSPEC_INLINE inline
#endif

template <typename T>
constexpr int64_t lanes() {
  return 32 / static_cast<int64_t>(sizeof(T));  // one 256-bit vector
}

// dots[x][y] = row_x(A) . row_y(B) for kRows rows of A (stride d) and kCols rows of B
template <typename T>
FASTSPEC_INLINE void dot_block(const T* const* A, const T* const* B, int64_t d, T (&dots)[kRows][kCols]) {
  constexpr int64_t W = lanes<T>();
  T acc[kRows][kCols][W] = {};
  const int64_t body = d - d % W;
  for (int64_t k = 0; k < body; k += W) {
    for (int64_t x = 0; x < kRows; ++x) {
      for (int64_t y = 0; y < kCols; ++y) {
#pragma omp simd
        for (int64_t w = 0; w < W; ++w) acc[x][y][w] += A[x][k + w] * B[y][k + w];
      }
    }
  }
  for (int64_t x = 0; x < kRows; ++x) {
    for (int64_t y = 0; y < kCols; ++y) {
      T s = T(0);
      for (int64_t w = 0; w < W; ++w) s += acc[x][y][w];
      for (int64_t k = body; k < d; ++k) s += A[x][k] * B[y][k];
      dots[x][y] = s;
    }
  }
}

template <typename T>
FASTSPEC_INLINE double pair_entry(const SeqGramArgs& a, int64_t i, int64_t j) {
  const T* ai = static_cast<const T*>(a.a_i) + i * a.t_i * a.d_in;   // [T, D_in]
  const T* gi = static_cast<const T*>(a.g_i) + i * a.t_i * a.d_out;  // [T, D_out]
  const T* aj = static_cast<const T*>(a.a_j) + j * a.t_j * a.d_in;   // [S, D_in]
  const T* gj = static_cast<const T*>(a.g_j) + j * a.t_j * a.d_out;  // [S, D_out]
  double total = 0.0;
  for (int64_t t = 0; t < a.t_i; t += kRows) {
    const T* rows_a[kRows];
    const T* rows_g[kRows];
    for (int64_t x = 0; x < kRows; ++x) {  // rows past the end repeat the last one (ignored)
      const int64_t tt = std::min(t + x, a.t_i - 1);
      rows_a[x] = ai + tt * a.d_in;
      rows_g[x] = gi + tt * a.d_out;
    }
    for (int64_t s = 0; s < a.t_j; s += kCols) {
      const T* cols_a[kCols];
      const T* cols_g[kCols];
      for (int64_t y = 0; y < kCols; ++y) {
        const int64_t ss = std::min(s + y, a.t_j - 1);
        cols_a[y] = aj + ss * a.d_in;
        cols_g[y] = gj + ss * a.d_out;
      }
      T da[kRows][kCols];
      T dg[kRows][kCols];
      dot_block<T>(rows_a, cols_a, a.d_in, da);
      dot_block<T>(rows_g, cols_g, a.d_out, dg);
      const int64_t nx = std::min(kRows, a.t_i - t);
      const int64_t ny = std::min(kCols, a.t_j - s);
      for (int64_t x = 0; x < nx; ++x) {
        for (int64_t y = 0; y < ny; ++y)
          total += static_cast<double>(da[x][y]) * static_cast<double>(dg[x][y]);
      }
    }
  }
  return total;
}

FASTSPEC_CLONES double pair_entry_f64(const SeqGramArgs& a, int64_t i, int64_t j) {
  return pair_entry<double>(a, i, j);
}
FASTSPEC_CLONES double pair_entry_f32(const SeqGramArgs& a, int64_t i, int64_t j) {
  return pair_entry<float>(a, i, j);
}

template <typename T>
double entry(const SeqGramArgs& a, int64_t i, int64_t j) {
  if constexpr (sizeof(T) == sizeof(double)) return pair_entry_f64(a, i, j);
  return pair_entry_f32(a, i, j);
}

template <typename T>
void run(const SeqGramArgs& a) {
  T* out = static_cast<T*>(a.out);
  const int64_t tiles_i = (a.n_i + kTile - 1) / kTile;
  const int64_t tiles_j = (a.n_j + kTile - 1) / kTile;
  const bool parallel = a.n_i * a.n_j * a.t_i * a.t_j * (a.d_in + a.d_out) > kMinParallelWork;
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (parallel)
  for (int64_t bi = 0; bi < tiles_i; ++bi) {
    for (int64_t bj = 0; bj < tiles_j; ++bj) {
      const int64_t i_end = std::min(a.n_i, (bi + 1) * kTile);
      const int64_t j_end = std::min(a.n_j, (bj + 1) * kTile);
      for (int64_t i = bi * kTile; i < i_end; ++i) {
        for (int64_t j = bj * kTile; j < j_end; ++j) out[i * a.n_j + j] = static_cast<T>(entry<T>(a, i, j));
      }
    }
  }
}

}  // namespace

void seq_gram_cpu(const SeqGramArgs& a) {
  check_arg(a.n_i >= 0 && a.n_j >= 0, "seq_gram: negative number of samples");
  check_arg(a.t_i >= 1 && a.t_j >= 1, "seq_gram: need at least one position per sample");
  check_arg(a.d_in >= 1 && a.d_out >= 1, "seq_gram: need positive feature sizes");
  dispatch_float(a.dtype, [&](auto tag) { run<decltype(tag)>(a); });
}

}  // namespace fastspec

// CPU kernel of seq_gram (see include/fastspec/seq_gram.h). OpenMP over tiles of kTile x kTile
// sample pairs; within a tile, 4 x 4 register blocks of (sample, position) rows and columns whose
// a- and g-dot products are accumulated in vector-wide partial sums (vectorised by the compiler),
// multiplied, and summed into the tile's entries. Nothing of size T x S is stored.
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
  return 64 / static_cast<int64_t>(sizeof(T));  // one 512-bit vector (two 256-bit ones)
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

// One tile: samples [i0, i1) x [j0, j1). Rows are the flattened (sample, position) pairs
// r = i * T + t of a_i/g_i (contiguous), columns c = j * S + s of a_j/g_j; each 4 x 4 block of
// (row, column) dot products adds da * dg to out[r / T, c / S], so short sequences waste nothing.
template <typename T>
FASTSPEC_INLINE void tile(const SeqGramArgs& a, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  const T* A = static_cast<const T*>(a.a_i);  // [N_i * T, D_in]
  const T* G = static_cast<const T*>(a.g_i);  // [N_i * T, D_out]
  const T* B = static_cast<const T*>(a.a_j);  // [N_j * S, D_in]
  const T* H = static_cast<const T*>(a.g_j);  // [N_j * S, D_out]
  double acc[kTile][kTile] = {};              // out[i0 + x, j0 + y]
  const int64_t r0 = i0 * a.t_i, r1 = i1 * a.t_i;
  const int64_t c0 = j0 * a.t_j, c1 = j1 * a.t_j;
  for (int64_t r = r0; r < r1; r += kRows) {
    const T* rows_a[kRows];
    const T* rows_g[kRows];
    for (int64_t x = 0; x < kRows; ++x) {  // rows past the end repeat the last one (ignored)
      const int64_t rr = std::min(r + x, r1 - 1);
      rows_a[x] = A + rr * a.d_in;
      rows_g[x] = G + rr * a.d_out;
    }
    for (int64_t c = c0; c < c1; c += kCols) {
      const T* cols_a[kCols];
      const T* cols_g[kCols];
      for (int64_t y = 0; y < kCols; ++y) {
        const int64_t cc = std::min(c + y, c1 - 1);
        cols_a[y] = B + cc * a.d_in;
        cols_g[y] = H + cc * a.d_out;
      }
      T da[kRows][kCols];
      T dg[kRows][kCols];
      dot_block<T>(rows_a, cols_a, a.d_in, da);
      dot_block<T>(rows_g, cols_g, a.d_out, dg);
      const int64_t nx = std::min(kRows, r1 - r);
      const int64_t ny = std::min(kCols, c1 - c);
      for (int64_t x = 0; x < nx; ++x) {
        const int64_t i = (r + x) / a.t_i - i0;
        for (int64_t y = 0; y < ny; ++y)
          acc[i][(c + y) / a.t_j - j0] += static_cast<double>(da[x][y]) * static_cast<double>(dg[x][y]);
      }
    }
  }
  T* out = static_cast<T*>(a.out);
  for (int64_t i = i0; i < i1; ++i) {
    for (int64_t j = j0; j < j1; ++j) out[i * a.n_j + j] = static_cast<T>(acc[i - i0][j - j0]);
  }
}

FASTSPEC_CLONES void tile_f64(const SeqGramArgs& a, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  tile<double>(a, i0, i1, j0, j1);
}
FASTSPEC_CLONES void tile_f32(const SeqGramArgs& a, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  tile<float>(a, i0, i1, j0, j1);
}

template <typename T>
void run(const SeqGramArgs& a) {
  const int64_t tiles_i = (a.n_i + kTile - 1) / kTile;
  const int64_t tiles_j = (a.n_j + kTile - 1) / kTile;
  const bool parallel = a.n_i * a.n_j * a.t_i * a.t_j * (a.d_in + a.d_out) > kMinParallelWork;
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (parallel)
  for (int64_t bi = 0; bi < tiles_i; ++bi) {
    for (int64_t bj = 0; bj < tiles_j; ++bj) {
      const int64_t i0 = bi * kTile, i1 = std::min(a.n_i, i0 + kTile);
      const int64_t j0 = bj * kTile, j1 = std::min(a.n_j, j0 + kTile);
      if constexpr (sizeof(T) == sizeof(double)) {
        tile_f64(a, i0, i1, j0, j1);
      } else {
        tile_f32(a, i0, i1, j0, j1);
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

// Host-side pieces shared by the CPU kernels of powerlaw_scan and powerlaw_scan_batch: the exponent
// of a tail and the KS distance of one cutoff with early abandon. Internal: not part of any API.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace fastspec {
namespace detail {

constexpr int64_t kNumSamples = 64;  // strided points giving a cheap lower bound on ks
constexpr int64_t kChunk = 4096;     // points between two abandon checks
constexpr int64_t kNumSeeds = 64;    // candidates evaluated first, to seed the bound

// alpha = 1 + n_t / (sum_{j>=s} log x_j - n_t log x_s), in float64 (Clauset eq. 3.1)
inline double tail_alpha(double tail_logsum, int64_t nt, double log_xs) {
  const double denom = tail_logsum - static_cast<double>(nt) * log_xs;
  return 1.0 + static_cast<double>(nt) / denom;
}

inline bool alpha_valid(double alpha, double lo, double hi) { return alpha > lo && alpha < hi; }

// The KS distance of the tail above cutoff index s of one ascending row.
template <typename T>
struct KsScan {
  const T* logx;             // [N] log of the ascending data
  const int64_t* run_start;  // [N] first index j' with x[j'] == x[j]
  int64_t n;                 // N

  // max |F* - Fhat| over j in [lo, hi) for cutoff index s
  T deviation(int64_t s, T e, T inv_nt, int64_t lo, int64_t hi) const {
    const T ls = logx[s];
    T m = T(0);
    for (int64_t j = lo; j < hi; ++j) {
      const T fit = T(1) - std::exp(e * (logx[j] - ls));
      const T emp = static_cast<T>(run_start[j] - s) * inv_nt;
      m = std::max(m, std::fabs(fit - emp));
    }
    return m;
  }

  // ks of cutoff s with exponent alpha, or +inf as soon as it provably exceeds `bound` (a partial
  // maximum > bound). A cutoff whose ks is <= bound is never abandoned, and its ks is exact.
  // `witness` (optional, one per sequential scan): a point that proved the previous cutoff
  // abandoned; neighbouring cutoffs deviate at nearly the same points, so it is tried first and
  // updated on every abandon.
  T ks(int64_t s, double alpha, double bound, int64_t* witness = nullptr) const {
    const int64_t nt = n - s;
    const T e = static_cast<T>(1.0 - alpha);
    const T inv_nt = static_cast<T>(1.0 / static_cast<double>(nt));
    const T inf = std::numeric_limits<T>::infinity();
    T m = T(0);
    if (std::isfinite(bound)) {
      if (witness != nullptr && *witness >= s && *witness < n) {
        m = deviation(s, e, inv_nt, *witness, *witness + 1);
        if (static_cast<double>(m) > bound) return inf;
      }
      int64_t arg = s;
      for (int64_t k = 0; k < kNumSamples; ++k) {
        const int64_t j = s + (k * nt) / kNumSamples;
        const T d = deviation(s, e, inv_nt, j, j + 1);
        if (d > m) {
          m = d;
          arg = j;
        }
      }
      if (static_cast<double>(m) > bound) {
        if (witness != nullptr) *witness = arg;
        return inf;
      }
    }
    for (int64_t lo = s; lo < n; lo += kChunk) {
      const int64_t hi = std::min(n, lo + kChunk);
      m = std::max(m, deviation(s, e, inv_nt, lo, hi));
      if (static_cast<double>(m) > bound) {
        if (witness != nullptr) {  // rare: keep the chunk's worst point
          T w = T(0);
          for (int64_t j = lo; j < hi; ++j) {
            const T d = deviation(s, e, inv_nt, j, j + 1);
            if (d > w) {
              w = d;
              *witness = j;
            }
          }
        }
        return inf;
      }
    }
    return m;
  }
};

}  // namespace detail
}  // namespace fastspec

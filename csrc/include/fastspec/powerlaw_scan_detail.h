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
constexpr int64_t kLeaf = 64;        // spans at most this long are scanned point by point
constexpr int64_t kMaxDepth = 128;   // pending spans of one grid span (one per halving, + 1)
constexpr int64_t kNumSeeds = 64;    // candidates evaluated first, to seed the bound

// alpha = 1 + n_t / (sum_{j>=s} log x_j - n_t log x_s), in float64 (Clauset eq. 3.1)
inline double tail_alpha(double tail_logsum, int64_t nt, double log_xs) {
  const double denom = tail_logsum - static_cast<double>(nt) * log_xs;
  return 1.0 + static_cast<double>(nt) / denom;
}

inline bool alpha_valid(double alpha, double lo, double hi) { return alpha > lo && alpha < hi; }

// The KS distance of the tail above cutoff index s of one ascending row.
//
// Exact by branch and bound over the points: F* is monotone in x and Fhat is non-decreasing, so
// between two evaluated points a < b no point deviates by more than
//   max(max(F*_a, F*_b) - Fhat_a, Fhat_b - min(F*_a, F*_b))
// (plus a few ulps for exp's rounding). Spans whose bound cannot beat the running maximum are
// skipped, the rest are halved until they are short enough to scan. A pure power law, whose
// cutoffs all deviate by about the same amount, then costs about sqrt(n_t) points per cutoff
// instead of n_t (benchmarks/results/stats_shapes.md). Every point that can hold the maximum is
// evaluated, so the result is bitwise the maximum over all points.
template <typename T>
struct KsScan {
  const T* logx;             // [N] log of the ascending data
  const int64_t* run_start;  // [N] first index j' with x[j'] == x[j]
  int64_t n;                 // N

  struct Point {
    int64_t j;
    T fit;  // F*(x_j)
    T emp;  // Fhat(x_j)
  };

  struct Cutoff {  // the fitted law of one cutoff
    int64_t s;
    T ls, e, inv_nt;
  };

  Point at(const Cutoff& c, int64_t j) const {
    return {j, T(1) - std::exp(c.e * (logx[j] - c.ls)), static_cast<T>(run_start[j] - c.s) * c.inv_nt};
  }

  static T gap(const Point& p) { return std::fabs(p.fit - p.emp); }

  // no point strictly between a and b deviates by more than this
  static T span_bound(const Point& a, const Point& b) {
    constexpr T slack = 16 * std::numeric_limits<T>::epsilon();  // exp is monotone to a few ulps
    return std::max(std::max(a.fit, b.fit) - a.emp, b.emp - std::min(a.fit, b.fit)) + slack;
  }

  // the point of [lo, hi) deviating most (deviation 0 at lo when the span is empty)
  Point worst(const Cutoff& c, int64_t lo, int64_t hi) const {
    Point w{lo, T(0), T(0)};
    for (int64_t j = lo; j < hi; ++j) {
      const Point p = at(c, j);
      if (gap(p) > gap(w)) w = p;
    }
    return w;
  }

  // ks of cutoff s with exponent alpha, or +inf as soon as it provably exceeds `bound` (a
  // deviation > bound). A cutoff whose ks is <= bound is never abandoned, and its ks is exact.
  // `witness` (optional, one per sequential scan): a point that proved the previous cutoff
  // abandoned; neighbouring cutoffs deviate at nearly the same points, so it is tried first and
  // updated on every abandon.
  T ks(int64_t s, double alpha, double bound, int64_t* witness = nullptr) const {
    const int64_t nt = n - s;
    const Cutoff c{s, logx[s], static_cast<T>(1.0 - alpha), static_cast<T>(1.0 / static_cast<double>(nt))};
    const T inf = std::numeric_limits<T>::infinity();
    auto abandon = [&](int64_t j) {
      if (witness != nullptr) *witness = j;
      return inf;
    };
    T m = T(0);
    if (witness != nullptr && std::isfinite(bound) && *witness >= s && *witness < n) {
      m = gap(at(c, *witness));
      if (static_cast<double>(m) > bound) return inf;
    }
    if (nt <= 2 * kLeaf) {
      const Point w = worst(c, s, n);
      m = std::max(m, gap(w));
      return static_cast<double>(m) > bound ? abandon(w.j) : m;
    }
    // a grid of kNumSamples + 1 points from s to n - 1: a lower bound, and the first spans
    Point grid[kNumSamples + 1];
    for (int64_t k = 0; k <= kNumSamples; ++k) {
      grid[k] = at(c, s + (k * (nt - 1)) / kNumSamples);
      m = std::max(m, gap(grid[k]));
      if (static_cast<double>(m) > bound) return abandon(grid[k].j);
    }
    // halve the spans that may hold a larger deviation, depth first, larger bound first
    Point left[kMaxDepth], right[kMaxDepth];
    for (int64_t g = 0; g < kNumSamples; ++g) {
      left[0] = grid[g];
      right[0] = grid[g + 1];
      for (int64_t depth = 1; depth > 0;) {
        --depth;
        const Point a = left[depth], b = right[depth];
        if (b.j - a.j <= 1 || span_bound(a, b) <= m) continue;
        if (b.j - a.j <= kLeaf || depth + 2 > kMaxDepth) {
          const Point w = worst(c, a.j + 1, b.j);
          m = std::max(m, gap(w));
          if (static_cast<double>(m) > bound) return abandon(w.j);
          continue;
        }
        const Point mid = at(c, a.j + (b.j - a.j) / 2);
        m = std::max(m, gap(mid));
        if (static_cast<double>(m) > bound) return abandon(mid.j);
        const bool left_on_top = span_bound(a, mid) >= span_bound(mid, b);
        left[depth] = left_on_top ? mid : a;
        right[depth] = left_on_top ? b : mid;
        left[depth + 1] = left_on_top ? a : mid;
        right[depth + 1] = left_on_top ? mid : b;
        depth += 2;
      }
    }
    return m;
  }
};

}  // namespace detail
}  // namespace fastspec

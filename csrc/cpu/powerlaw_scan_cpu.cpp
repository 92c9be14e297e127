// CPU kernel of powerlaw_scan (see include/fastspec/powerlaw_scan.h). OpenMP over candidates.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include "fastspec/powerlaw_scan.h"

namespace fastspec {
namespace {

constexpr int64_t kNumSamples = 64;            // strided points giving a cheap lower bound on ks
constexpr int64_t kChunk = 4096;               // points between two abandon checks
constexpr int64_t kNumSeeds = 64;              // candidates evaluated first, to seed the bound
constexpr int64_t kMinParallelWork = 1 << 22;  // below ~this many points x candidates, one thread

void atomic_min(std::atomic<double>& target, double value) {
  double cur = target.load(std::memory_order_relaxed);
  while (value < cur && !target.compare_exchange_weak(cur, value, std::memory_order_relaxed)) {
  }
}

template <typename T>
struct Scan {
  const T* logx;             // [N]
  const int64_t* run_start;  // [N]
  int64_t n;

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

  // ks of cutoff s, or +inf as soon as it provably exceeds `bound`
  T ks(int64_t s, T e, T inv_nt, double bound) const {
    const int64_t nt = n - s;
    T m = T(0);
    if (std::isfinite(bound)) {
      for (int64_t k = 0; k < kNumSamples; ++k) {
        const int64_t j = s + (k * nt) / kNumSamples;
        m = std::max(m, deviation(s, e, inv_nt, j, j + 1));
      }
      if (static_cast<double>(m) > bound) return std::numeric_limits<T>::infinity();
    }
    for (int64_t lo = s; lo < n; lo += kChunk) {
      m = std::max(m, deviation(s, e, inv_nt, lo, std::min(n, lo + kChunk)));
      if (static_cast<double>(m) > bound) return std::numeric_limits<T>::infinity();
    }
    return m;
  }
};

template <typename T>
void run(const PowerlawScanArgs& a) {
  const Scan<T> scan{static_cast<const T*>(a.logx), a.run_start, a.n};
  T* alpha = static_cast<T*>(a.alpha);
  T* ks = static_cast<T*>(a.ks);
  const int64_t C = a.num_candidates;
  std::atomic<double> best{std::numeric_limits<double>::infinity()};

  auto visit = [&](int64_t c) {
    const int64_t s = a.candidates[c];
    const int64_t nt = a.n - s;
    const double denom = a.tail_logsum[c] - static_cast<double>(nt) * static_cast<double>(scan.logx[s]);
    const double al = 1.0 + static_cast<double>(nt) / denom;
    alpha[c] = static_cast<T>(al);
    if (a.prune && !(al > a.alpha_lo && al < a.alpha_hi)) {
      ks[c] = std::numeric_limits<T>::infinity();
      return;
    }
    const double bound =
        a.prune ? best.load(std::memory_order_relaxed) : std::numeric_limits<double>::infinity();
    const T d = scan.ks(s, static_cast<T>(1.0 - al), static_cast<T>(1.0 / static_cast<double>(nt)), bound);
    ks[c] = d;
    if (a.prune && std::isfinite(static_cast<double>(d))) atomic_min(best, static_cast<double>(d));
  };

  // small scans lose more to waking threads (badly, on a loaded machine) than they gain
  const bool parallel = a.n * C > kMinParallelWork;
  if (a.prune) {  // seed the bound with evenly spaced candidates (revisited below, cheaply)
    const int64_t seeds = std::min(C, kNumSeeds);
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
    for (int64_t k = 0; k < seeds; ++k) visit((k * C) / seeds);
  }
#pragma omp parallel for schedule(dynamic, 16) if (parallel)
  for (int64_t c = C - 1; c >= 0; --c) visit(c);  // short tails first: cheap, tighten the bound
}

}  // namespace

void powerlaw_scan_cpu(const PowerlawScanArgs& a) {
  check_arg(a.n >= 2, "powerlaw_scan: need at least 2 data points");
  check_arg(a.num_candidates >= 0, "powerlaw_scan: negative number of candidates");
  switch (a.dtype) {
    case DType::kFloat32:
      run<float>(a);
      break;
    case DType::kFloat64:
      run<double>(a);
      break;
  }
}

}  // namespace fastspec

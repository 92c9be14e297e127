// CPU kernel of powerlaw_scan (see include/fastspec/powerlaw_scan.h). OpenMP over candidates.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include "fastspec/powerlaw_scan.h"
#include "fastspec/powerlaw_scan_detail.h"

namespace fastspec {
namespace {

using detail::kNumSeeds;
constexpr int64_t kMinParallelWork = 1 << 22;  // below ~this many points x candidates, one thread

void atomic_min(std::atomic<double>& target, double value) {
  double cur = target.load(std::memory_order_relaxed);
  while (value < cur && !target.compare_exchange_weak(cur, value, std::memory_order_relaxed)) {
  }
}

template <typename T>
void run(const PowerlawScanArgs& a) {
  const detail::KsScan<T> scan{static_cast<const T*>(a.logx), a.run_start, a.n};
  T* alpha = static_cast<T*>(a.alpha);
  T* ks = static_cast<T*>(a.ks);
  const int64_t C = a.num_candidates;
  std::atomic<double> best{std::numeric_limits<double>::infinity()};

  auto visit = [&](int64_t c, int64_t* witness) {
    const int64_t s = a.candidates[c];
    const double al = detail::tail_alpha(a.tail_logsum[c], a.n - s, static_cast<double>(scan.logx[s]));
    alpha[c] = static_cast<T>(al);
    if (a.prune && !detail::alpha_valid(al, a.alpha_lo, a.alpha_hi)) {
      ks[c] = std::numeric_limits<T>::infinity();
      return;
    }
    const double bound =
        a.prune ? best.load(std::memory_order_relaxed) : std::numeric_limits<double>::infinity();
    const T d = scan.ks(s, al, bound, a.prune ? witness : nullptr);
    ks[c] = d;
    if (a.prune && std::isfinite(static_cast<double>(d))) atomic_min(best, static_cast<double>(d));
  };

  // small scans lose more to waking threads (badly, on a loaded machine) than they gain
  const bool parallel = a.n * C > kMinParallelWork;
#pragma omp parallel if (parallel)
  {
    int64_t witness = -1;  // per thread: the last point that proved a cutoff abandoned
    if (a.prune) {         // seed the bound with evenly spaced candidates (revisited below, cheaply)
      const int64_t seeds = std::min(C, kNumSeeds);
#pragma omp for schedule(dynamic, 1)
      for (int64_t k = 0; k < seeds; ++k) visit((k * C) / seeds, &witness);
    }
#pragma omp for schedule(dynamic, 16)
    for (int64_t c = C - 1; c >= 0; --c) visit(c, &witness);  // short tails first: cheap bound
  }
}

}  // namespace

void powerlaw_scan_cpu(const PowerlawScanArgs& a) {
  check_arg(a.n >= 2, "powerlaw_scan: need at least 2 data points");
  check_arg(a.num_candidates >= 0, "powerlaw_scan: negative number of candidates");
  dispatch_float(a.dtype, [&](auto tag) { run<decltype(tag)>(a); });
}

}  // namespace fastspec

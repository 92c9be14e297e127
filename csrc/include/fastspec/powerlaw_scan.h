// powerlaw_scan: the Clauset xmin scan for a continuous power law.
//
// For every candidate cutoff x_s (s = candidates[c], the first index of its value in the
// ascending data x[0..N-1]) with tail size n_t = N - s:
//   alpha_c = 1 + n_t / (sum_{j>=s} log x_j - n_t log x_s)                  (Clauset eq. 3.1)
//   ks_c    = max_{j>=s} | F*(x_j) - Fhat(x_j) |,  F*(x) = 1 - (x/x_s)^(1-alpha_c),
//             Fhat(x_j) = (first_index_of(x_j) - s) / n_t                    (left-limit ECDF)
// This is the `powerlaw` package's KS convention (methods.md sections 1 and 4).
//
// prune = true finds the argmin exactly without computing every ks: candidates whose alpha lies
// outside (alpha_lo, alpha_hi) get ks = +inf, and a candidate is abandoned (ks = +inf) as soon
// as a partial maximum proves its ks exceeds the best ks found so far. Every finite ks is exact
// and no candidate with the minimal ks is ever abandoned; which others survive depends on thread
// scheduling, so the Python wrapper keeps only the minimisers (a deterministic result).
#pragma once

#include "fastspec/common.h"

namespace fastspec {

struct PowerlawScanArgs {
  const void* logx;           // [N] log of the ascending data, dtype
  const int64_t* run_start;   // [N] first index j' with x[j'] == x[j]
  const int64_t* candidates;  // [C] ascending run starts, each with a tail of >= 2 points
  const double* tail_logsum;  // [C] sum_{j >= candidates[c]} logx[j], float64
  void* alpha;                // [C] out, dtype
  void* ks;                   // [C] out, dtype
  void* best;                 // [1] workspace, float32 (CUDA only; CPU keeps its own)
  int64_t n;                  // N
  int64_t num_candidates;     // C
  double alpha_lo;            // valid alpha interval (prune only), open at both ends
  double alpha_hi;
  bool prune;
  DType dtype;
};

void powerlaw_scan_cpu(const PowerlawScanArgs& args);
void powerlaw_scan_cuda(const PowerlawScanArgs& args, const CudaLaunch& launch);

}  // namespace fastspec

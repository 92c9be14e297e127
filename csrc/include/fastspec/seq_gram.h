// seq_gram: the Gram matrix of per-sample weight gradients of a linear map used at several
// positions, without forming the gradients.
//
// Sample i's gradient of a weight applied at positions t (inputs a_it, output gradients g_it)
// is G_i = sum_t g_it a_it^T, and
//   out[i, j] = <G_i, G_j>_F = sum_{t,s} (a_i[i,t] . a_j[j,s]) (g_i[i,t] . g_j[j,s]).
// The kernels tile over (i, j) pairs and accumulate the T x S position pairs in registers: the
// [N_i, N_j, T, S] products are never stored. Accumulation is in the input dtype for the dot
// products and in double for the sum over position pairs.
#pragma once

#include "fastspec/common.h"

namespace fastspec {

struct SeqGramArgs {
  const void* a_i;  // [N_i, T, D_in]  contiguous, dtype
  const void* g_i;  // [N_i, T, D_out] contiguous, dtype
  const void* a_j;  // [N_j, S, D_in]  contiguous, dtype
  const void* g_j;  // [N_j, S, D_out] contiguous, dtype
  void* out;        // [N_i, N_j] out, dtype
  int64_t n_i;      // N_i
  int64_t n_j;      // N_j
  int64_t t_i;      // T
  int64_t t_j;      // S
  int64_t d_in;     // D_in
  int64_t d_out;    // D_out
  DType dtype;
};

void seq_gram_cpu(const SeqGramArgs& args);
void seq_gram_cuda(const SeqGramArgs& args, const CudaLaunch& launch);

}  // namespace fastspec

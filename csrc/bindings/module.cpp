// fastspec._C: the only translation unit that includes pybind11. It passes plain values
// (addresses as integers, sizes, scalars, a stream handle) to the torch-free kernels, releases
// the GIL around every kernel call; std::invalid_argument surfaces as ValueError.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "fastspec/common.h"
#include "fastspec/powerlaw_scan.h"
#include "fastspec/powerlaw_scan_batch.h"
#include "fastspec/seq_gram.h"

#ifndef FASTSPEC_VERSION
#define FASTSPEC_VERSION "unknown"
#endif
#ifndef FASTSPEC_COMPILER
#define FASTSPEC_COMPILER "unknown"
#endif
#ifdef FASTSPEC_WITH_OPENMP
#include <omp.h>
#endif

namespace py = pybind11;
using fastspec::DType;

namespace {

template <typename T>
T* ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

DType to_dtype(int code) {
  fastspec::check_arg(code == 0 || code == 1, "dtype code must be 0 (float32) or 1 (float64)");
  return static_cast<DType>(code);
}

py::dict build_info() {
  const fastspec::CudaInfo cuda = fastspec::cuda_info();
  py::dict d;
  d["version"] = FASTSPEC_VERSION;
  d["compiler"] = FASTSPEC_COMPILER;
#ifdef FASTSPEC_WITH_OPENMP
  d["openmp"] = true;
  d["openmp_max_threads"] = omp_get_max_threads();
#else
  d["openmp"] = false;
  d["openmp_max_threads"] = 1;
#endif
  d["cuda_compiled"] = cuda.compiled;
  d["cuda_archs"] = cuda.archs;
  d["cuda_runtime_version"] = cuda.runtime_version;
  d["cuda_device_count"] = cuda.device_count;
  d["cuda_device_error"] = cuda.device_error;
  return d;
}

fastspec::PowerlawScanArgs powerlaw_scan_args(std::uintptr_t logx, std::uintptr_t run_start,
                                              std::uintptr_t candidates, std::uintptr_t tail_logsum,
                                              std::uintptr_t alpha, std::uintptr_t ks, std::uintptr_t best,
                                              int64_t n, int64_t num_candidates, double alpha_lo,
                                              double alpha_hi, bool prune, int dtype) {
  return fastspec::PowerlawScanArgs{ptr<const void>(logx),
                                    ptr<const int64_t>(run_start),
                                    ptr<const int64_t>(candidates),
                                    ptr<const double>(tail_logsum),
                                    ptr<void>(alpha),
                                    ptr<void>(ks),
                                    ptr<void>(best),
                                    n,
                                    num_candidates,
                                    alpha_lo,
                                    alpha_hi,
                                    prune,
                                    to_dtype(dtype)};
}

fastspec::PowerlawScanBatchArgs powerlaw_scan_batch_args(std::uintptr_t logx, std::uintptr_t run_start,
                                                         std::uintptr_t tail_logsum,
                                                         std::uintptr_t xmin_index, std::uintptr_t alpha,
                                                         std::uintptr_t ks, int64_t rows, int64_t n,
                                                         double alpha_lo, double alpha_hi, int dtype) {
  return fastspec::PowerlawScanBatchArgs{ptr<const void>(logx),
                                         ptr<const int64_t>(run_start),
                                         ptr<const double>(tail_logsum),
                                         ptr<int64_t>(xmin_index),
                                         ptr<void>(alpha),
                                         ptr<void>(ks),
                                         rows,
                                         n,
                                         alpha_lo,
                                         alpha_hi,
                                         to_dtype(dtype)};
}

fastspec::SeqGramArgs seq_gram_args(std::uintptr_t a_i, std::uintptr_t g_i, std::uintptr_t a_j,
                                    std::uintptr_t g_j, std::uintptr_t out, int64_t n_i, int64_t n_j,
                                    int64_t t_i, int64_t t_j, int64_t d_in, int64_t d_out, int dtype) {
  return fastspec::SeqGramArgs{ptr<const void>(a_i),
                               ptr<const void>(g_i),
                               ptr<const void>(a_j),
                               ptr<const void>(g_j),
                               ptr<void>(out),
                               n_i,
                               n_j,
                               t_i,
                               t_j,
                               d_in,
                               d_out,
                               to_dtype(dtype)};
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastspec native kernels (torch-free; called through fastspec.ops)";
  m.def("build_info", &build_info, "What this extension was built with and the devices it sees.");

  m.def(
      "powerlaw_scan_cpu",
      [](std::uintptr_t logx, std::uintptr_t run_start, std::uintptr_t candidates, std::uintptr_t tail_logsum,
         std::uintptr_t alpha, std::uintptr_t ks, std::uintptr_t best, int64_t n, int64_t num_candidates,
         double alpha_lo, double alpha_hi, bool prune, int dtype) {
        fastspec::powerlaw_scan_cpu(powerlaw_scan_args(logx, run_start, candidates, tail_logsum, alpha, ks,
                                                       best, n, num_candidates, alpha_lo, alpha_hi, prune,
                                                       dtype));
      },
      py::arg("logx"), py::arg("run_start"), py::arg("candidates"), py::arg("tail_logsum"), py::arg("alpha"),
      py::arg("ks"), py::arg("best"), py::arg("n"), py::arg("num_candidates"), py::arg("alpha_lo"),
      py::arg("alpha_hi"), py::arg("prune"), py::arg("dtype"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "powerlaw_scan_cuda",
      [](std::uintptr_t logx, std::uintptr_t run_start, std::uintptr_t candidates, std::uintptr_t tail_logsum,
         std::uintptr_t alpha, std::uintptr_t ks, std::uintptr_t best, int64_t n, int64_t num_candidates,
         double alpha_lo, double alpha_hi, bool prune, int dtype, int device, std::uintptr_t stream) {
        fastspec::powerlaw_scan_cuda(
            powerlaw_scan_args(logx, run_start, candidates, tail_logsum, alpha, ks, best, n, num_candidates,
                               alpha_lo, alpha_hi, prune, dtype),
            fastspec::CudaLaunch{device, ptr<void>(stream)});
      },
      py::arg("logx"), py::arg("run_start"), py::arg("candidates"), py::arg("tail_logsum"), py::arg("alpha"),
      py::arg("ks"), py::arg("best"), py::arg("n"), py::arg("num_candidates"), py::arg("alpha_lo"),
      py::arg("alpha_hi"), py::arg("prune"), py::arg("dtype"), py::arg("device"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "powerlaw_scan_batch_cpu",
      [](std::uintptr_t logx, std::uintptr_t run_start, std::uintptr_t tail_logsum, std::uintptr_t xmin_index,
         std::uintptr_t alpha, std::uintptr_t ks, int64_t rows, int64_t n, double alpha_lo, double alpha_hi,
         int dtype) {
        fastspec::powerlaw_scan_batch_cpu(powerlaw_scan_batch_args(
            logx, run_start, tail_logsum, xmin_index, alpha, ks, rows, n, alpha_lo, alpha_hi, dtype));
      },
      py::arg("logx"), py::arg("run_start"), py::arg("tail_logsum"), py::arg("xmin_index"), py::arg("alpha"),
      py::arg("ks"), py::arg("rows"), py::arg("n"), py::arg("alpha_lo"), py::arg("alpha_hi"),
      py::arg("dtype"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "powerlaw_scan_batch_cuda",
      [](std::uintptr_t logx, std::uintptr_t run_start, std::uintptr_t tail_logsum, std::uintptr_t xmin_index,
         std::uintptr_t alpha, std::uintptr_t ks, int64_t rows, int64_t n, double alpha_lo, double alpha_hi,
         int dtype, int device, std::uintptr_t stream) {
        fastspec::powerlaw_scan_batch_cuda(
            powerlaw_scan_batch_args(logx, run_start, tail_logsum, xmin_index, alpha, ks, rows, n, alpha_lo,
                                     alpha_hi, dtype),
            fastspec::CudaLaunch{device, ptr<void>(stream)});
      },
      py::arg("logx"), py::arg("run_start"), py::arg("tail_logsum"), py::arg("xmin_index"), py::arg("alpha"),
      py::arg("ks"), py::arg("rows"), py::arg("n"), py::arg("alpha_lo"), py::arg("alpha_hi"),
      py::arg("dtype"), py::arg("device"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "seq_gram_cpu",
      [](std::uintptr_t a_i, std::uintptr_t g_i, std::uintptr_t a_j, std::uintptr_t g_j, std::uintptr_t out,
         int64_t n_i, int64_t n_j, int64_t t_i, int64_t t_j, int64_t d_in, int64_t d_out, int dtype) {
        fastspec::seq_gram_cpu(
            seq_gram_args(a_i, g_i, a_j, g_j, out, n_i, n_j, t_i, t_j, d_in, d_out, dtype));
      },
      py::arg("a_i"), py::arg("g_i"), py::arg("a_j"), py::arg("g_j"), py::arg("out"), py::arg("n_i"),
      py::arg("n_j"), py::arg("t_i"), py::arg("t_j"), py::arg("d_in"), py::arg("d_out"), py::arg("dtype"),
      py::call_guard<py::gil_scoped_release>());

  m.def(
      "seq_gram_cuda",
      [](std::uintptr_t a_i, std::uintptr_t g_i, std::uintptr_t a_j, std::uintptr_t g_j, std::uintptr_t out,
         int64_t n_i, int64_t n_j, int64_t t_i, int64_t t_j, int64_t d_in, int64_t d_out, int dtype,
         int device, std::uintptr_t stream) {
        fastspec::seq_gram_cuda(
            seq_gram_args(a_i, g_i, a_j, g_j, out, n_i, n_j, t_i, t_j, d_in, d_out, dtype),
            fastspec::CudaLaunch{device, ptr<void>(stream)});
      },
      py::arg("a_i"), py::arg("g_i"), py::arg("a_j"), py::arg("g_j"), py::arg("out"), py::arg("n_i"),
      py::arg("n_j"), py::arg("t_i"), py::arg("t_j"), py::arg("d_in"), py::arg("d_out"), py::arg("dtype"),
      py::arg("device"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());
}

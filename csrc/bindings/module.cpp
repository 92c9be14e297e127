// fastspec._C: the only translation unit that includes pybind11. Each op's <Op>Args struct
// (include/fastspec/<op>.h) is bound once, field by field (OpBinding); `<op>_cpu(fields)` and
// `<op>_cuda(fields, device, stream)` fill it from a dict by name and run the kernel with the GIL
// released; std::invalid_argument from a kernel surfaces as ValueError.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

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

// An op's CUDA entry point, or nullptr in a build without CUDA kernels (its binding then raises).
#ifdef FASTSPEC_WITH_CUDA
#define FASTSPEC_CUDA_ENTRY(f) &fastspec::f
#else
#define FASTSPEC_CUDA_ENTRY(f) nullptr
#endif

namespace py = pybind11;

namespace {

using fastspec::CudaLaunch;
using fastspec::DType;

// How a field of each C++ type is read from its keyword argument; `kind` names it in _C.ops
// and _C.pyi. A wrong Python type raises py::cast_error.
template <typename T>
struct Field;
template <typename T>
struct Field<T*> {
  static constexpr const char* kind = "address";
  // An integer address, or a tensor: any object with data_ptr(), called by name so that csrc stays
  // free of torch. The wrappers pass contiguous tensors only (ops/_dispatch.py: check_tensor).
  static T* from(PyObject* h) {
    static PyObject* const data_ptr = PyUnicode_InternFromString("data_ptr");
    py::object address = py::reinterpret_borrow<py::object>(h);
    if (!PyLong_Check(h)) {
      address = py::reinterpret_steal<py::object>(PyObject_CallMethodNoArgs(h, data_ptr));
      if (!address || !PyLong_Check(address.ptr())) throw py::cast_error();  // no tensor
    }
    const unsigned long long v = PyLong_AsUnsignedLongLong(address.ptr());  // NOLINT(runtime/int)
    if (PyErr_Occurred()) throw py::cast_error();
    return reinterpret_cast<T*>(static_cast<std::uintptr_t>(v));
  }
};
template <>
struct Field<int64_t> {
  static constexpr const char* kind = "int";
  static int64_t from(PyObject* h) {
    if (!PyLong_Check(h)) throw py::cast_error();
    const long long v = PyLong_AsLongLong(h);  // NOLINT(runtime/int)
    if (v == -1 && PyErr_Occurred()) throw py::cast_error();
    return static_cast<int64_t>(v);
  }
};
template <>
struct Field<double> {
  static constexpr const char* kind = "float";
  static double from(PyObject* h) {
    if (!PyFloat_Check(h) && !PyLong_Check(h)) throw py::cast_error();
    const double v = PyFloat_AsDouble(h);
    if (v == -1.0 && PyErr_Occurred()) throw py::cast_error();
    return v;
  }
};
template <>
struct Field<bool> {
  static constexpr const char* kind = "bool";
  static bool from(PyObject* h) {
    if (!PyBool_Check(h)) throw py::cast_error();
    return h == Py_True;
  }
};
template <>
struct Field<DType> {
  static constexpr const char* kind = "DType";
  static DType from(PyObject* h) { return py::handle(h).cast<DType>(); }
};

// One op's binding: its kernels and its fields, in declaration order.
template <typename Args>
struct Op {
  struct Entry {
    std::string name;
    PyObject* key;  // the interned name: keywords of a call are matched by identity first
    const char* kind;
    std::function<void(Args&, PyObject*)> set;
  };
  const char* name;
  void (*cpu)(const Args&);
  void (*cuda)(const Args&, const CudaLaunch&);
  std::vector<Entry> entries;

  // The Args struct from a dict of fields: every field once, none unknown, each of its kind;
  // a TypeError naming the op and the field otherwise.
  Args fill(PyObject* fields) const {
    if (!PyDict_Check(fields)) throw py::type_error(std::string(name) + ": fields must be a dict");
    Args a{};
    std::vector<bool> seen(entries.size(), false);
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(fields, &pos, &key, &value)) {
      size_t j = 0;
      while (j < entries.size() && entries[j].key != key) ++j;
      if (j == entries.size()) {  // not interned: compare the text
        j = 0;
        while (j < entries.size() && PyUnicode_Compare(entries[j].key, key) != 0) ++j;
        PyErr_Clear();  // a key that is no string compares unequal
      }
      if (j == entries.size()) {
        throw py::type_error(std::string(name) + ": no field '" + py::str(key).cast<std::string>() + "'");
      }
      const Entry& e = entries[j];
      try {
        e.set(a, value);
      } catch (const py::cast_error&) {
        PyErr_Clear();  // e.g. the AttributeError of an object that is no tensor
        throw py::type_error(std::string(name) + ": " + e.name + " must be " + e.kind + ", got " +
                             Py_TYPE(value)->tp_name);
      }
      seen[j] = true;
    }
    for (size_t j = 0; j < entries.size(); ++j) {
      if (!seen[j]) throw py::type_error(std::string(name) + ": missing the field '" + entries[j].name + "'");
    }
    return a;
  }

  // _C.<op>_cpu(fields)
  static PyObject* run_cpu(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    return guarded([&] {
      const Op& op = *static_cast<const Op*>(PyCapsule_GetPointer(self, nullptr));
      if (nargs != 1 || kwnames != nullptr)
        throw py::type_error(std::string(op.name) + "_cpu takes (fields)");
      const Args a = op.fill(args[0]);
      py::gil_scoped_release release;
      op.cpu(a);
    });
  }

  // _C.<op>_cuda(fields, device, stream)
  static PyObject* run_cuda(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    return guarded([&] {
      const Op& op = *static_cast<const Op*>(PyCapsule_GetPointer(self, nullptr));
      if (nargs != 3 || kwnames != nullptr) {
        throw py::type_error(std::string(op.name) + "_cuda takes (fields, device, stream)");
      }
      const Args a = op.fill(args[0]);
      const int device = py::handle(args[1]).cast<int>();
      const auto stream = py::handle(args[2]).cast<std::uintptr_t>();
      if (op.cuda == nullptr) {
        throw std::runtime_error(std::string(op.name) +
                                 ": fastspec was built without CUDA kernels (FASTSPEC_CUDA=OFF or no "
                                 "nvcc at build time); rebuild with FASTSPEC_CUDA=ON to use CUDA tensors");
      }
      py::gil_scoped_release release;
      op.cuda(a, CudaLaunch{device, reinterpret_cast<void*>(stream)});
    });
  }

  // Runs f and returns None, or sets the Python error (std::invalid_argument → ValueError).
  template <typename F>
  static PyObject* guarded(F&& f) {
    try {
      f();
      Py_RETURN_NONE;
    } catch (py::error_already_set& e) {
      e.restore();
    } catch (const py::cast_error& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const py::builtin_exception& e) {
      e.set_error();
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
    return nullptr;
  }
};

// Binds one op from its <Op>Args struct: `<op>_cpu(fields)` and `<op>_cuda(fields, device,
// stream)` fill the struct from a dict by field name and run the kernel with the GIL released
// (plain METH_FASTCALL functions, cheaper to call than pybind11's dispatcher); `_C.ops[op]` lists
// the fields as ((name, kind), ...). Fields are declared with .field(name, &Args::member), once
// per op.
template <typename Args>
class OpBinding {
 public:
  OpBinding(py::module_& m, const char* op, void (*cpu)(const Args&),
            void (*cuda)(const Args&, const CudaLaunch&))
      : module_(m), op_(new Op<Args>{op, cpu, cuda, {}}) {  // lives as long as the process
    add(std::string(op) + "_cpu", &Op<Args>::run_cpu, "Run the CPU kernel on a dict of every field.");
    add(std::string(op) + "_cuda", &Op<Args>::run_cuda,
        "Run the CUDA kernel on a dict of every field, on (device, stream).");
    module_.attr("ops")[op] = py::tuple();
  }

  template <typename T>
  OpBinding& field(const char* name, T Args::* member) {
    op_->entries.push_back({name, PyUnicode_InternFromString(name), Field<T>::kind,
                            [member](Args& a, PyObject* h) { a.*member = Field<T>::from(h); }});
    fields_.append(py::make_tuple(name, Field<T>::kind));
    module_.attr("ops")[op_->name] = py::tuple(fields_);
    return *this;
  }

 private:
  using Fast = PyObject* (*)(PyObject*, PyObject* const*, Py_ssize_t, PyObject*);

  void add(const std::string& name, Fast f, const char* doc) {
    auto* def = new PyMethodDef{(new std::string(name))->c_str(),
                                reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(f)),
                                METH_FASTCALL | METH_KEYWORDS, doc};
    auto self = py::reinterpret_steal<py::object>(PyCapsule_New(op_, nullptr, nullptr));
    auto fn =
        py::reinterpret_steal<py::object>(PyCFunction_NewEx(def, self.ptr(), module_.attr("__name__").ptr()));
    if (!fn) throw py::error_already_set();
    module_.add_object(name.c_str(), fn);
  }

  py::module_& module_;
  Op<Args>* op_;
  py::list fields_;
};

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

}  // namespace

PYBIND11_MODULE(_C, m) {
  using namespace fastspec;  // the Args structs and kernels bound below
  m.doc() = "fastspec native kernels (torch-free; called through fastspec.ops)";
  m.def("build_info", &build_info, "What this extension was built with and the devices it sees.");

  py::enum_<DType> dtype(m, "DType", "The kernels' dtypes, named as torch names them.");
  for (DType d : kDTypes) dtype.value(dtype_name(d), d);
  dtype.def_property_readonly("itemsize", [](DType d) { return dtype_itemsize(d); });

  m.attr("ops") = py::dict();

  OpBinding<PowerlawScanArgs>(m, "powerlaw_scan", &powerlaw_scan_cpu, FASTSPEC_CUDA_ENTRY(powerlaw_scan_cuda))
      .field("logx", &PowerlawScanArgs::logx)
      .field("run_start", &PowerlawScanArgs::run_start)
      .field("candidates", &PowerlawScanArgs::candidates)
      .field("tail_logsum", &PowerlawScanArgs::tail_logsum)
      .field("alpha", &PowerlawScanArgs::alpha)
      .field("ks", &PowerlawScanArgs::ks)
      .field("best", &PowerlawScanArgs::best)
      .field("n", &PowerlawScanArgs::n)
      .field("num_candidates", &PowerlawScanArgs::num_candidates)
      .field("alpha_lo", &PowerlawScanArgs::alpha_lo)
      .field("alpha_hi", &PowerlawScanArgs::alpha_hi)
      .field("prune", &PowerlawScanArgs::prune)
      .field("dtype", &PowerlawScanArgs::dtype);

  OpBinding<PowerlawScanBatchArgs>(m, "powerlaw_scan_batch", &powerlaw_scan_batch_cpu,
                                   FASTSPEC_CUDA_ENTRY(powerlaw_scan_batch_cuda))
      .field("logx", &PowerlawScanBatchArgs::logx)
      .field("run_start", &PowerlawScanBatchArgs::run_start)
      .field("tail_logsum", &PowerlawScanBatchArgs::tail_logsum)
      .field("xmin_index", &PowerlawScanBatchArgs::xmin_index)
      .field("alpha", &PowerlawScanBatchArgs::alpha)
      .field("ks", &PowerlawScanBatchArgs::ks)
      .field("rows", &PowerlawScanBatchArgs::rows)
      .field("n", &PowerlawScanBatchArgs::n)
      .field("alpha_lo", &PowerlawScanBatchArgs::alpha_lo)
      .field("alpha_hi", &PowerlawScanBatchArgs::alpha_hi)
      .field("dtype", &PowerlawScanBatchArgs::dtype);

  OpBinding<SeqGramArgs>(m, "seq_gram", &seq_gram_cpu, FASTSPEC_CUDA_ENTRY(seq_gram_cuda))
      .field("a_i", &SeqGramArgs::a_i)
      .field("g_i", &SeqGramArgs::g_i)
      .field("a_j", &SeqGramArgs::a_j)
      .field("g_j", &SeqGramArgs::g_j)
      .field("out", &SeqGramArgs::out)
      .field("n_i", &SeqGramArgs::n_i)
      .field("n_j", &SeqGramArgs::n_j)
      .field("t_i", &SeqGramArgs::t_i)
      .field("t_j", &SeqGramArgs::t_j)
      .field("d_in", &SeqGramArgs::d_in)
      .field("d_out", &SeqGramArgs::d_out)
      .field("dtype", &SeqGramArgs::dtype);
}

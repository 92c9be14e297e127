"""The native boundary itself: each op's fields as the extension states them, the generated
stub, the dtype table, and how bad fields and kernel errors surface."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from fastspec import _C
from fastspec.ops import _dispatch, _stub

OPS = sorted(_C.ops)


def zeros(op: str) -> dict[str, Any]:
    """Every field of ``op``, zero of its kind (float32 for the dtype field)."""
    zero = {"address": 0, "int": 0, "float": 0.0, "bool": False, "DType": _C.DType.float32}
    return {name: zero[kind] for name, kind in _C.ops[op]}


def test_every_op_has_its_wrapper_twin_and_kernels() -> None:
    import fastspec.ops
    import fastspec.reference

    assert OPS == sorted(fastspec.ops.__all__) == sorted(fastspec.reference.__all__)
    for op in OPS:
        assert callable(getattr(_C, f"{op}_cpu")) and callable(getattr(_C, f"{op}_cuda"))
        assert [kind for _, kind in _C.ops[op]].count("DType") == 1


def test_committed_stub_is_what_the_extension_states() -> None:
    assert _stub.STUB.read_text() == _stub.render(_C), (
        "fastspec/_C.pyi is stale: run `python -m fastspec.ops._stub`"
    )


@pytest.mark.parametrize("op", OPS)
def test_fields_are_required_known_and_typed(op: str) -> None:
    run = getattr(_C, f"{op}_cpu")
    values = zeros(op)
    first, _ = _C.ops[op][0]
    with pytest.raises(TypeError, match=f"{op}: missing the field '{first}'"):
        run({k: v for k, v in values.items() if k != first})
    with pytest.raises(TypeError, match=f"{op}: no field 'extra'"):
        run({**values, "extra": 1})
    with pytest.raises(TypeError, match=f"{op}: dtype must be DType, got int"):
        run({**values, "dtype": 1})  # a bare int is no DType
    size = next(name for name, kind in _C.ops[op] if kind == "int")
    with pytest.raises(TypeError, match=f"{op}: {size} must be int, got float"):
        run({**values, size: 2.5})
    with pytest.raises(TypeError, match=f"{op}: {first} must be address, got str"):
        run({**values, first: "0x10"})
    with pytest.raises(TypeError, match=f"{op}_cpu takes \\(fields\\)"):
        run(**values)


def test_tensor_and_integer_addresses_agree() -> None:
    a = torch.randn(3, 2, 4, dtype=torch.float64)
    g = torch.randn(3, 2, 5, dtype=torch.float64)
    outs = [torch.full((3, 3), torch.nan, dtype=torch.float64) for _ in range(2)]
    sizes = {"n_i": 3, "n_j": 3, "t_i": 2, "t_j": 2, "d_in": 4, "d_out": 5}
    F = _C.DType.float64
    _C.seq_gram_cpu({"a_i": a, "g_i": g, "a_j": a, "g_j": g, "out": outs[0], "dtype": F, **sizes})
    _C.seq_gram_cpu({
        "a_i": a.data_ptr(), "g_i": g.data_ptr(), "a_j": a.data_ptr(), "g_j": g.data_ptr(),
        "out": outs[1].data_ptr(), "dtype": F, **sizes,
    })  # fmt: skip
    Ga = torch.einsum("nto,nti->noi", g, a).flatten(1)
    torch.testing.assert_close(outs[0], Ga @ Ga.T, rtol=1e-12, atol=1e-12)
    assert torch.equal(outs[0], outs[1])


def test_dtype_table_is_checked_against_torch() -> None:
    assert _dispatch.DTYPE_CODES == {
        torch.float32: _C.DType.float32,
        torch.float64: _C.DType.float64,
    }

    class Fake:
        def __init__(self, itemsize: int) -> None:
            self.itemsize = itemsize

    class WrongSize:
        __members__: ClassVar = {"float32": Fake(4), "float64": Fake(4)}

    class Missing:
        __members__: ClassVar = {"float32": Fake(4)}

    with pytest.raises(ImportError, match=r"DType\.float64 \(4 bytes\)"):
        _dispatch.dtype_table(WrongSize)
    with pytest.raises(ImportError, match=r"lacks torch\.float64"):
        _dispatch.dtype_table(Missing)


def test_kernel_argument_errors_surface_as_value_error() -> None:
    # std::invalid_argument from the kernel's own checks, through the binding
    bad = {**zeros("seq_gram"), "n_i": -1, "t_i": 1, "t_j": 1, "d_in": 1, "d_out": 1}
    with pytest.raises(ValueError, match="seq_gram: negative number of samples"):
        _C.seq_gram_cpu(bad)


def test_eager_calls_skip_the_dispatcher_with_the_same_result(tmp_path: Any) -> None:
    """A plain eager call runs the op's function directly, bitwise what the dispatcher returns;
    a process's first native call then imports no torch._dynamo (1.4 s here)."""
    import subprocess
    import sys

    from fastspec.ops.powerlaw_scan import _powerlaw_scan, default_candidates, scan_inputs

    x = torch.sort(torch.rand(500, dtype=torch.float64) + 0.5).values
    logx, run_start, suffix = scan_inputs(x)
    cands = default_candidates(x)
    args = (logx, run_start, cands, suffix[cands], 1.0, float("inf"), True)
    for direct, dispatched in zip(_dispatch.run_op(_powerlaw_scan, *args), _powerlaw_scan(*args)):
        assert torch.equal(direct, dispatched)
    code = (
        "import sys, numpy as np\n"
        "from fastspec.stats import PowerLaw\n"
        "PowerLaw.fit(np.random.default_rng(0).pareto(1.5, 1000) + 1)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run(  # outside the source tree, whose fastspec/ has no built extension
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.strip() == "False"


def test_traced_and_graded_calls_go_through_the_dispatcher(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastspec.ops.seq_gram import _seq_gram

    seen: list[str] = []
    monkeypatch.setattr(_seq_gram, "_init_fn", lambda *a: seen.append("direct"))
    a = torch.randn(2, 3, 4, dtype=torch.float64)
    g = torch.randn(2, 3, 5, dtype=torch.float64)
    _dispatch.run_op(_seq_gram, a, g, a, g)
    assert seen == ["direct"]
    with torch._subclasses.fake_tensor.FakeTensorMode():
        out = _dispatch.run_op(_seq_gram, *(torch.empty(2, 3, 4), torch.empty(2, 3, 5)) * 2)
    assert out.shape == (2, 2) and seen == ["direct"]

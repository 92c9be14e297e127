"""CI smoke run of benchmarks/side_by_side_hessian.py: both models (the MLP of the CPU record,
the ResNet-style CNN of the GPU one) on 200 digits, fastspec and the peers CI has installed,
every residual certified by the script (the full comparison is run as a script)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize("model", ["mlp", "resnet"])
def test_side_by_side_hessian_smoke(
    model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("sklearn")  # the digits; peers that are not installed are skipped
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import record
    from side_by_side_hessian import main

    monkeypatch.setattr(record, "RESULTS", tmp_path)
    main(["--smoke", "--model", model, "--skip", "rebuilt"])
    text = (
        tmp_path / f"hessian_vs_peers{'' if model == 'mlp' else '_resnet_cpu'}_smoke.md"
    ).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| fastspec eigsh |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "4" and float(cells[4]) <= 1e-6  # 4 pairs, recomputed residuals certified

"""GradientRecorder against gradients computed directly, and the three tail tests against
fastspec.stats.tail_tests called on the same samples."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fastspec.grads import GradientRecorder, dimension_wise_test, iteration_wise_test, noise_test
from fastspec.stats import tail_tests


def _train(steps: int = 10) -> tuple[GradientRecorder, list[torch.Tensor], list[torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    X, Y = torch.randn(64, 6, dtype=torch.float64), torch.randint(0, 3, (64,))
    loss_fn = nn.CrossEntropyLoss()
    rec = GradientRecorder(
        model, num_coordinates=40, seed=3, loss_fn=loss_fn,
        data=[(X[:40], Y[:40]), (X[40:], Y[40:])], full_gradient_steps=(0, steps - 1),
    )  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    flats, fulls = [], []
    for step in range(steps):
        idx = torch.arange(step * 6, step * 6 + 8) % 64
        opt.zero_grad()
        loss_fn(model(X[idx]), Y[idx]).backward()
        rec.record(step)
        flats.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
        full = torch.autograd.grad(loss_fn(model(X), Y), list(model.parameters()))
        fulls.append(torch.cat([g.reshape(-1) for g in full]))
        opt.step()
    return rec, flats, fulls


def test_recorder_stores_sampled_coordinates_and_noise() -> None:
    rec, flats, fulls = _train()
    P = flats[0].numel()
    assert rec.coordinates.shape == (40,) and rec.num_params == P
    assert bool((rec.coordinates[1:] > rec.coordinates[:-1]).all())
    assert torch.equal(
        rec.coordinates, GradientRecorder(rec.model, seed=3, num_coordinates=40).coordinates
    )
    c = rec.coordinates
    assert rec.steps == list(range(10))
    torch.testing.assert_close(rec.minibatch, torch.stack([f[c] for f in flats]), rtol=0, atol=0)
    noise = torch.stack([(f - g)[c] for f, g in zip(flats, fulls)])
    assert rec.noise is not None
    torch.testing.assert_close(rec.noise, noise, rtol=0, atol=1e-14)
    assert sorted(rec.full_gradients) == [0, 9]
    torch.testing.assert_close(rec.full_gradients[9], flats[9], rtol=0, atol=0)
    d = rec.to_dict()
    assert d["steps"] == rec.steps and len(d["noise"]) == 10


def test_three_tests_equal_tail_tests_on_the_right_samples() -> None:
    rec, flats, _ = _train()
    dim = dimension_wise_test(rec)
    ref = tail_tests([flats[0].numpy(), flats[9].numpy()])
    assert dim.frac_power_law == ref.frac_power_law
    np.testing.assert_array_equal(dim.pl_ks, ref.pl_ks)
    np.testing.assert_array_equal(dimension_wise_test(torch.stack([flats[0], flats[9]])).pl_alpha,
                                  ref.pl_alpha)  # fmt: skip
    it = iteration_wise_test(rec, gaussian_test="shapiro")
    ref_it = tail_tests(rec.minibatch.numpy().T, gaussian_test="shapiro")
    np.testing.assert_array_equal(it.normal_p, ref_it.normal_p)
    assert it.n.tolist() == [10] * 40 and it.frac_gaussian == ref_it.frac_gaussian
    assert rec.noise is not None
    nz = noise_test(rec)
    ref_nz = tail_tests(rec.noise.numpy().T)
    np.testing.assert_array_equal(nz.gauss_ks, ref_nz.gauss_ks)
    assert nz.frac_power_law == ref_nz.frac_power_law

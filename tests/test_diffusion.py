import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from core.common.config import DiffusionConfig
from core.model.diffusion import GaussianDiffusion, linear_beta_schedule


@pytest.fixture
def diff():
    return GaussianDiffusion(DiffusionConfig())


def test_schedule_matches_spec_values(diff):
    betas = linear_beta_schedule(1000, 1e-4, 0.02)
    assert betas.dtype == np.float64 and betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    assert diff.alphas_cumprod[200] == pytest.approx(0.656, abs=1e-3)
    assert diff.alphas_cumprod[299] == pytest.approx(0.396, abs=1e-3)
    assert diff.alphas_cumprod[400] == pytest.approx(0.194, abs=1e-3)


def test_q_sample_moments(diff):
    torch.manual_seed(0)
    x0 = torch.full((20000, 1, 1, 1), 0.7)
    t = torch.full((20000,), 200)
    xt = diff.q_sample(x0, t, torch.randn_like(x0))
    acp = diff.alphas_cumprod[200]
    assert xt.mean().item() == pytest.approx(np.sqrt(acp) * 0.7, abs=0.02)
    assert xt.var().item() == pytest.approx(1 - acp, rel=0.05)


def test_x0_recovered_when_eps_is_exact(diff):
    torch.manual_seed(0)
    x0 = torch.rand(4, 3, 8, 8)
    t = torch.tensor([0, 150, 400, 999])
    eps = torch.randn_like(x0)
    xt = diff.q_sample(x0, t, eps)
    torch.testing.assert_close(diff.predict_x0_from_eps(xt, t, eps), x0, atol=2e-3, rtol=0)


def test_x0_estimate_is_clamped(diff):
    xt = torch.full((1, 3, 2, 2), 5.0)
    x0 = diff.predict_x0_from_eps(xt, torch.tensor([300]), torch.zeros_like(xt))
    assert x0.max().item() == 1.0


@pytest.mark.parametrize("w", [1.0, 0.5, 2.0])
def test_norm_guidance_equals_closed_form(diff, w):
    torch.manual_seed(1)
    x_ts, x_tb = torch.randn(3, 3, 8, 8) * 0.3, torch.randn(3, 3, 8, 8) * 0.3
    eps_s, eps_b = torch.randn_like(x_ts), torch.randn_like(x_tb)
    t_s, t_b = torch.tensor([200, 50, 299]), torch.tensor([400, 800, 300])
    guided = diff.norm_guided_x0(x_ts, t_s, eps_s, x_tb, t_b, eps_b, w=w)
    acp = torch.tensor(diff.alphas_cumprod[t_s.numpy()], dtype=torch.float32).view(-1, 1, 1, 1)
    u = (x_ts - (1 - acp).sqrt() * eps_s) / acp.sqrt()
    n = diff.predict_x0_from_eps(x_tb, t_b, eps_b)
    closed = ((1 - w * (1 - acp)) * u + w * (1 - acp) * n).clamp(-1, 1)
    torch.testing.assert_close(guided, closed, atol=1e-4, rtol=0)


def test_reconstruct_runs_both_scales_as_one_batch(diff):
    calls = []

    def model(x, t):
        calls.append((x.shape[0], sorted(set(t.tolist()))))
        return torch.zeros_like(x)

    x0 = torch.rand(5, 3, 8, 8)
    out = diff.reconstruct(model, x0, torch.randn_like(x0), torch.randn_like(x0))
    assert calls == [(10, [200, 400])]
    assert out.shape == x0.shape


def test_iterative_reconstruction_runs_and_counts_steps():
    diff = GaussianDiffusion(DiffusionConfig(t_small=20))
    calls = []

    def model(x, t):
        calls.append(int(t[0]))
        return torch.zeros_like(x)

    x0 = torch.rand(2, 3, 8, 8)
    out = diff.reconstruct_iterative(model, x0, generator=torch.Generator().manual_seed(0))
    assert calls == list(range(19, -1, -1))
    assert out.shape == x0.shape and torch.isfinite(out).all() and out.abs().max() <= 1


def test_symmetric_range_roundtrip():
    diff = GaussianDiffusion(DiffusionConfig(data_range="symmetric"))
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(diff.from_model_range(diff.to_model_range(x)), x)


def _small_diffusion() -> GaussianDiffusion:
    return GaussianDiffusion(DiffusionConfig(num_timesteps=100, t_small=3, t_big=6, train_t_split=5))


def _counting_model(calls: list):
    def model(x, t):
        calls.append(int(t[0]))
        return torch.zeros_like(x)
    return model


def test_iterative_reconstruction_from_t_start_zero_is_the_input():
    """t_start=0 means no noise and no step, not "the default t_s"."""
    diff, calls = _small_diffusion(), []
    x0 = torch.rand(2, 3, 4, 4)
    out = diff.reconstruct_iterative(_counting_model(calls), x0, t_start=0)
    assert calls == []
    torch.testing.assert_close(out, x0)
    diff.reconstruct_iterative(_counting_model(calls), x0)  # None: the configured t_s
    assert calls == [2, 1, 0]
    with pytest.raises(ValueError, match="t_start"):
        diff.reconstruct_iterative(_counting_model(calls), x0, t_start=101)


class _DtypeRecorder(TorchDispatchMode):
    """Records the dtype of every tensor an operator returns."""

    def __init__(self):
        super().__init__()
        self.dtypes: set[torch.dtype] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.dtypes.add(t.dtype)
        return out


def test_coefficients_are_float32_tensors_and_match_the_float64_schedule(diff):
    """No float64 tensor on the device path (MPS has none); float32 tables equal the float64 schedule."""
    table = diff.coefficients(torch.device("cpu"))
    assert table is diff.coefficients(torch.device("cpu"))  # made once per device
    for name, values in table.items():
        assert values.dtype == torch.float32, name
        np.testing.assert_allclose(values.numpy(), getattr(diff, name), rtol=1e-6, err_msg=name)
    x0 = torch.rand(3, 3, 4, 4)
    t = torch.tensor([0, 200, 999])
    noise = torch.randn_like(x0)
    with _DtypeRecorder() as rec:
        xt = diff.q_sample(x0, t, noise)
        x0_hat = diff.predict_x0_from_eps(xt, t, noise, clamp=False)
        diff.reconstruct(lambda x, tt: torch.zeros_like(x), x0, noise, noise)
    assert torch.float64 not in rec.dtypes and torch.float32 in rec.dtypes
    acp = diff.alphas_cumprod[t.numpy()].reshape(-1, 1, 1, 1)
    expected = np.sqrt(acp) * x0.double().numpy() + np.sqrt(1 - acp) * noise.double().numpy()
    np.testing.assert_allclose(xt.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(x0_hat.numpy(), x0.numpy(), atol=2e-3)

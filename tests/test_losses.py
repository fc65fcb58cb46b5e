import torch
import torch.nn.functional as F

from core.losses import DiffusionADLoss, FocalLoss, noise_loss


def test_noise_loss_only_counts_normal_samples():
    eps = torch.zeros(3, 3, 4, 4)
    hat = torch.zeros(3, 3, 4, 4)
    hat[1] = 1.0  # wrong prediction only on sample 1
    assert noise_loss(hat, eps, hat, eps, torch.tensor([True, False, True])).item() == 0.0
    assert noise_loss(hat, eps, hat, eps, torch.tensor([True, True, True])).item() == torch.tensor(2 / 3).item()


def test_all_anomalous_batch_gives_zero_not_nan():
    eps, hat = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = noise_loss(hat, eps, hat, eps, torch.tensor([False, False]))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.isfinite(hat.grad).all()


def test_focal_loss_formula():
    p = torch.tensor([0.9, 0.2, 0.6])
    y = torch.tensor([1.0, 0.0, 0.0])
    bce = F.binary_cross_entropy(p, y, reduction="none")
    expected = (0.5 * (1 - torch.exp(-bce)) ** 4 * bce).mean()
    torch.testing.assert_close(FocalLoss()(p, y), expected)


def test_total_loss_combines_terms():
    eps = torch.zeros(2, 3, 4, 4)
    mask = torch.zeros(2, 1, 4, 4)
    mask_hat = torch.full((2, 1, 4, 4), 0.3)
    out = DiffusionADLoss()(eps, eps, eps, eps, mask_hat, mask, torch.tensor([True, False]))
    torch.testing.assert_close(out["loss"], out["noise"] + 5 * out["focal"] + out["smooth_l1"])
    assert out["smooth_l1"].item() > 0

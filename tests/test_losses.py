import torch
import torch.nn.functional as F

from core.train.losses import DiffusionADLoss, FocalLoss, noise_loss


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
    """Computed from logits: the official formula on sigmoid(logits)."""
    p = torch.tensor([0.9, 0.2, 0.6])
    y = torch.tensor([1.0, 0.0, 0.0])
    bce = F.binary_cross_entropy(p, y, reduction="none")
    expected = (0.5 * (1 - torch.exp(-bce)) ** 4 * bce).mean()
    torch.testing.assert_close(FocalLoss()(torch.logit(p), y), expected)


def test_confidently_wrong_pixel_still_has_a_gradient():
    """A logit of -20 on a defect pixel (p = 2e-9) is the pixel that most needs a gradient; clamping the
    probability to [1e-6, 1 - 1e-6] gave it none."""
    logit = torch.tensor([-20.0, 25.0], requires_grad=True)
    target = torch.tensor([1.0, 0.0])
    FocalLoss()(logit, target).backward()
    assert torch.isfinite(logit.grad).all() and (logit.grad[0] < 0) and (logit.grad[1] > 0)
    total = DiffusionADLoss()(*[torch.zeros(1, 3, 1, 2)] * 4, logit.detach().view(1, 1, 1, 2).requires_grad_(),
                              target.view(1, 1, 1, 2), torch.tensor([False]))
    assert torch.isfinite(total["loss"]) and total["focal"].item() > 1.0


def test_non_finite_logits_give_a_non_finite_loss():
    """The trainer stops on a non-finite loss; BCE-with-logits must pass NaN through, not raise."""
    out = DiffusionADLoss()(*[torch.zeros(1, 3, 1, 1)] * 4, torch.tensor([[[[float("nan")]]]]),
                            torch.ones(1, 1, 1, 1), torch.tensor([False]))
    assert not torch.isfinite(out["loss"])


def test_total_loss_combines_terms():
    eps = torch.zeros(2, 3, 4, 4)
    mask = torch.zeros(2, 1, 4, 4)
    mask_hat = torch.full((2, 1, 4, 4), -0.8)  # logits
    out = DiffusionADLoss()(eps, eps, eps, eps, mask_hat, mask, torch.tensor([True, False]))
    torch.testing.assert_close(out["loss"], out["noise"] + 5 * out["focal"] + out["smooth_l1"])
    assert out["smooth_l1"].item() > 0
    torch.testing.assert_close(out["smooth_l1"], F.smooth_l1_loss(torch.sigmoid(mask_hat), mask))

"""Data augmentation in NumPy, vectorised over the batch (no loop over images).

    random_crop_flip: pad by 4 with black pixels, crop back at a random offset, flip half the images
                      (torchvision RandomCrop(32, padding=4) + RandomHorizontalFlip, the CCT examples recipe)
    mixup / cutmix:   timm's "batch" mode: sample i is mixed with sample N-1-i (a flip of the batch);
                      mixup lam ~ Beta(a, a); cutmix cuts a box of area (1 - lam) and corrects lam to the
                      box actually pasted. Targets become soft: lam y_i + (1 - lam) y_{N-1-i}.
Shape legend: N batch, H, W, C (images as stored, uint8 channels-last) or [N, C, H, W] (model input).
"""
import numpy as np


def random_crop_flip(x, rng, pad=4, flip=True):
    """x uint8 [N, H, W, C] -> augmented copy [N, H, W, C]."""
    N, H, W, C = x.shape
    xp = np.zeros((N, H + 2 * pad, W + 2 * pad, C), dtype=x.dtype)
    xp[:, pad:pad + H, pad:pad + W] = x
    oy = rng.integers(0, 2 * pad + 1, size=N)
    ox = rng.integers(0, 2 * pad + 1, size=N)
    rows = oy[:, None] + np.arange(H)                                  # [N, H]
    cols = ox[:, None] + np.arange(W)                                  # [N, W]
    if flip:
        flipped = rng.random(N) < 0.5
        cols = np.where(flipped[:, None], cols[:, ::-1], cols)         # a flip is reversed column order
    n = np.arange(N)[:, None, None]
    return xp[n, rows[:, :, None], cols[:, None, :]]                   # gather -> [N, H, W, C]


def mixup(x, q, rng, alpha=0.8):
    """x float [N, C, H, W], q soft targets [N, K]. Returns (mixed x, mixed q, lam)."""
    lam = float(rng.beta(alpha, alpha))
    xf, qf = x[::-1], q[::-1]
    return lam * x + (1.0 - lam) * xf, lam * q + (1.0 - lam) * qf, lam


def cutmix(x, q, rng, alpha=1.0):
    """Paste a box of the flipped batch into every image; lam = 1 - box area / image area."""
    N, C, H, W = x.shape
    lam = float(rng.beta(alpha, alpha))
    ratio = np.sqrt(1.0 - lam)
    ch, cw = int(H * ratio), int(W * ratio)
    cy, cx = int(rng.integers(0, H)), int(rng.integers(0, W))
    y0, y1 = np.clip(cy - ch // 2, 0, H), np.clip(cy + ch // 2, 0, H)
    x0, x1 = np.clip(cx - cw // 2, 0, W), np.clip(cx + cw // 2, 0, W)
    out = x.copy()
    out[:, :, y0:y1, x0:x1] = x[::-1, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (H * W)
    return out, lam * q + (1.0 - lam) * q[::-1], lam


def mix_batch(x, q, rng, mixup_alpha=0.0, cutmix_alpha=0.0, switch_prob=0.5):
    """timm Mixup with prob 1: cutmix with probability switch_prob when both are on, else the one that is on."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return x, q
    if x.shape[0] % 2:
        raise ValueError(f"mixup/cutmix pair sample i with N-1-i: the batch size must be even, got {x.shape[0]}")
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < switch_prob)
    if use_cutmix:
        x, q, _ = cutmix(x, q, rng, cutmix_alpha)
    else:
        x, q, _ = mixup(x, q, rng, mixup_alpha)
    return x, q

"""Measurement operators A of image inverse problems (arXiv:2503.09746) and their Gaussian likelihood.

Images x [B, C, H, W] in [-1, 1]; a measurement is y = A(x) + sigma_y n, n ~ N(0, I), and the constraint that
turns the prior p(x) into the posterior p(x | y) ~ p(x) r_y(x) is the likelihood (up to its constant):

    log r_y(x) = -|y - A(x)|^2 / (2 sigma_y^2)                       (summed over every entry of y)

Every operator is an nn.Module built of differentiable torch ops, so grad_x log r_y(x) comes from autograd; for a
linear A it equals A^T (y - A x) / sigma_y^2.

    Inpainting(mask)          A(x) = M * x: the masked pixels read 0 (y keeps x's shape). `box_mask` masks out a
                              square; `random_pixel_mask` keeps a seeded set of pixels. Masks are per pixel [H, W],
                              shared by the channels.
    GaussianBlur(k, padding)  A(x) = k * x per channel (a correlation, equal to the convolution: k is symmetric);
                              k[u, v] ~ exp(-((u - c)^2 + (v - c)^2) / (2 s^2)), normalised to sum 1. The border is
                              reflected without repeating the edge (torch 'reflect' = scipy.ndimage 'mirror') or
                              padded with zeros; y keeps x's shape.
    FourierMagnitude()        A(x) = |F(x)|, F the orthonormal 2-D DFT over H, W per channel (phase retrieval).
                              Non-linear; |F| has the subgradient 0 where F(x) = 0 (torch's abs of a complex 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workloads.inverse.config import OperatorConfig, operator_problem


def gaussian_log_likelihood(y: Tensor, a_x: Tensor, sigma_y: float) -> Tensor:
    """log r_y(x) = -|y - A(x)|^2 / (2 sigma_y^2), summed over all but the batch dim: [B, ...] -> [B]."""
    return -(y - a_x).pow(2).flatten(1).sum(1) / (2 * sigma_y**2)


# ---------------------------------------------------------------- masks
def box_mask(height: int, width: int, box_size: int, corner: tuple[int, int] | None = None) -> Tensor:
    """[H, W] float: 0 on the box_size x box_size square with top-left `corner` (None = centred), 1 elsewhere."""
    row, col = corner if corner is not None else ((height - box_size) // 2, (width - box_size) // 2)
    mask = torch.ones(height, width)
    mask[row : row + box_size, col : col + box_size] = 0
    return mask


def random_pixel_mask(height: int, width: int, keep_fraction: float, seed: int) -> Tensor:
    """[H, W] float: 1 on exactly round(keep_fraction * H * W) pixels drawn without replacement (a seeded
    permutation, so the count is exact rather than Binomial), 0 elsewhere."""
    num_kept = round(keep_fraction * height * width)
    kept = torch.randperm(height * width, generator=torch.Generator().manual_seed(seed))[:num_kept]
    mask = torch.zeros(height * width)
    mask[kept] = 1
    return mask.view(height, width)


def gaussian_kernel(kernel_size: int, sigma: float) -> Tensor:
    """[K, K]: k[u, v] ~ exp(-((u - c)^2 + (v - c)^2) / (2 sigma^2)), c = (K - 1) / 2, summing to 1."""
    offsets = torch.arange(kernel_size, dtype=torch.float64) - (kernel_size - 1) / 2
    profile = torch.exp(-(offsets**2) / (2 * sigma**2))  # [K]; the kernel is separable
    kernel = profile[:, None] * profile[None, :]
    return (kernel / kernel.sum()).float()


# ---------------------------------------------------------------- operators
class Inpainting(nn.Module):
    """A(x) = M * x with a pixel mask M [H, W] (1 = observed)."""

    def __init__(self, mask: Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.mask.to(x.dtype)  # [B, C, H, W]


class GaussianBlur(nn.Module):
    """A(x) = k * x on each channel, with the border extended by `padding` ('reflect' or 'zeros')."""

    def __init__(self, kernel: Tensor, padding: str):
        super().__init__()
        if padding not in ("reflect", "zeros"):
            raise ValueError(f"padding must be 'reflect' or 'zeros', not {padding!r}")
        self.register_buffer("kernel", kernel)
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        half = self.kernel.shape[-1] // 2
        mode = "reflect" if self.padding == "reflect" else "constant"
        padded = F.pad(x, (half, half, half, half), mode=mode)  # [B, C, H + 2h, W + 2h]
        channels = x.shape[1]
        weight = self.kernel.to(x.dtype).expand(channels, 1, -1, -1)  # [C, 1, K, K]: one kernel per channel
        return F.conv2d(padded, weight, groups=channels)  # [B, C, H, W]


class FourierMagnitude(nn.Module):
    """A(x) = |F(x)|: the magnitude of the orthonormal 2-D DFT of each channel."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.fft.fft2(x, norm="ortho").abs()  # [B, C, H, W]


def make_operator(config: OperatorConfig, image_shape: tuple[int, int, int]) -> nn.Module:
    """The operator A of `config` for images of shape (C, H, W); ValueError when it does not fit them."""
    problem = operator_problem(config, image_shape)
    if problem is not None:
        raise ValueError(problem)
    _, height, width = image_shape
    c = config
    if c.kind == "box_inpainting":
        return Inpainting(box_mask(height, width, c.box_size, c.box_corner))
    if c.kind == "random_inpainting":
        return Inpainting(random_pixel_mask(height, width, c.keep_fraction, c.mask_seed))
    if c.kind == "gaussian_deblur":
        return GaussianBlur(gaussian_kernel(c.blur_kernel_size, c.blur_sigma), c.blur_padding)
    return FourierMagnitude()


class Measurement:
    """One operator A with its noise std: draws y = A(x) + sigma_y n and scores log r_y(x)."""

    def __init__(self, config: OperatorConfig, image_shape: tuple[int, int, int]):
        self.operator = make_operator(config, image_shape)
        self.sigma_y = config.sigma_y

    def measure(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """y = A(x) + sigma_y n for images x [B, C, H, W]."""
        a_x = self.operator(x)
        return a_x + self.sigma_y * torch.randn(a_x.shape, generator=generator, device=x.device, dtype=x.dtype)

    def log_r(self, x: Tensor, y: Tensor) -> Tensor:
        """log r_y(x) [B], differentiable in x."""
        return gaussian_log_likelihood(y, self.operator(x), self.sigma_y)

    def grad_log_r(self, x: Tensor, y: Tensor) -> Tensor:
        """grad_x log r_y(x) [B, C, H, W] by autograd (each row's log r depends on its own x only)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.log_r(x, y).sum(), x)
        return grad

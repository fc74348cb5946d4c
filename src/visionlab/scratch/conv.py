"""2-D convolution and max pooling by hand, with their backward passes.

What deep-learning libraries call convolution (`torch.nn.functional.conv2d`, Keras'
`Conv2D`) slides the kernel over the image *as it is*: output[i, j] = sum over (a, b) of
image[i + a, j + b] * kernel[a, b]. Mathematics calls that cross-correlation
(`scipy.signal.correlate2d`). A true convolution (`scipy.signal.convolve2d`, used for
edge detection in the notes) first flips the kernel upside down and left to right. For a
network the difference does not matter, since it learns whichever kernel works (it would
learn the flipped one); for a hand-made kernel it does: an asymmetric kernel such as
Sobel gives the opposite sign under the other operation. Symmetric kernels (a Laplacian,
a box blur) give the same result either way.

The loops run over kernel offsets, not pixels: each offset (a, b) contributes one strided
view of the padded input times one slice of the kernel, so a 3x3 kernel is 9 batched
matrix products. The backward pass visits the same views in the same order.
"""

from __future__ import annotations

import torch
from torch import Tensor

Pair = int | tuple[int, int]


def _pair(v: Pair) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _pad(x: Tensor, padding: tuple[int, int]) -> Tensor:
    """Zero-pad the last two axes by `padding` on each side."""
    ph, pw = padding
    if not (ph or pw):
        return x
    out = x.new_zeros(*x.shape[:-2], x.shape[-2] + 2 * ph, x.shape[-1] + 2 * pw)
    out[..., ph : ph + x.shape[-2], pw : pw + x.shape[-1]] = x
    return out


def _window(a: int, b: int, size: tuple[int, int], stride: tuple[int, int]) -> tuple[slice, slice]:
    """Where kernel offset (a, b) reads in the padded input for an output of `size`."""
    (oh, ow), (sh, sw) = size, stride
    return slice(a, a + sh * (oh - 1) + 1, sh), slice(b, b + sw * (ow - 1) + 1, sw)


def _output_size(
    x: Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> tuple[int, int]:
    h, w = x.shape[-2] + 2 * padding[0], x.shape[-1] + 2 * padding[1]
    if h < kernel[0] or w < kernel[1]:
        raise ValueError(f"kernel {kernel} is larger than the padded input {(h, w)}")
    return (h - kernel[0]) // stride[0] + 1, (w - kernel[1]) // stride[1] + 1


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Pair = 1, padding: Pair = 0) -> Tensor:
    """Cross-correlate `x` (N, C, H, W) with `weight` (O, C, kH, kW), like F.conv2d."""
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"input has {x.shape[1]} channels but the kernel expects {weight.shape[1]}")
    stride, padding = _pair(stride), _pair(padding)
    kh, kw = weight.shape[-2:]
    size = _output_size(x, (kh, kw), stride, padding)
    xp = _pad(x, padding)
    out = x.new_zeros(x.shape[0], weight.shape[0], *size)
    for a in range(kh):
        for b in range(kw):
            rows, cols = _window(a, b, size, stride)
            out += torch.einsum("nchw,oc->nohw", xp[:, :, rows, cols], weight[:, :, a, b])
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def conv2d_backward(
    grad: Tensor, x: Tensor, weight: Tensor, stride: Pair = 1, padding: Pair = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (input, weight, bias) of `conv2d` given the output gradient `grad`."""
    stride, padding = _pair(stride), _pair(padding)
    kh, kw = weight.shape[-2:]
    size = (grad.shape[-2], grad.shape[-1])
    xp = _pad(x, padding)
    grad_xp = torch.zeros_like(xp)
    grad_w = torch.zeros_like(weight)
    for a in range(kh):
        for b in range(kw):
            rows, cols = _window(a, b, size, stride)
            grad_w[:, :, a, b] = torch.einsum("nohw,nchw->oc", grad, xp[:, :, rows, cols])
            grad_xp[:, :, rows, cols] += torch.einsum("nohw,oc->nchw", grad, weight[:, :, a, b])
    ph, pw = padding
    grad_x = grad_xp[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]]
    return grad_x, grad_w, grad.sum(dim=(0, 2, 3))


MODES = ("valid", "full")


def correlate2d(image: Tensor, kernel: Tensor, mode: str = "valid") -> Tensor:
    """Cross-correlation of two 2-D arrays, as scipy.signal.correlate2d.

    mode 'valid': only where the kernel fits inside the image (the notes' choice, the
    border is dropped); 'full': everywhere the two overlap (zero padding of kernel - 1).
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is unknown; allowed: {', '.join(MODES)}")
    if image.ndim != 2 or kernel.ndim != 2:
        raise ValueError(f"image and kernel must be 2-D; got shapes {tuple(image.shape)} and {tuple(kernel.shape)}")
    padding = (kernel.shape[0] - 1, kernel.shape[1] - 1) if mode == "full" else (0, 0)
    return conv2d(image[None, None], kernel[None, None].to(image.dtype), padding=padding)[0, 0]


def convolve2d(image: Tensor, kernel: Tensor, mode: str = "valid") -> Tensor:
    """True convolution, as scipy.signal.convolve2d: correlation with the kernel flipped
    in both axes (see the module docstring for why the two differ)."""
    return correlate2d(image, kernel.flip(0, 1), mode)


def max_pool2d(x: Tensor, kernel: Pair, stride: Pair | None = None) -> tuple[Tensor, Tensor]:
    """Max over each window of `x` (N, C, H, W), like F.max_pool2d (no padding).

    Returns the maxima and, for the backward pass, where each came from: its flat index
    in the H x W plane (what F.max_pool2d's return_indices gives).
    """
    (kh, kw) = _pair(kernel)
    (sh, sw) = _pair(stride if stride is not None else kernel)
    oh, ow = _output_size(x, (kh, kw), (sh, sw), (0, 0))
    windows = x.unfold(2, kh, sh).unfold(3, kw, sw)  # N, C, oh, ow, kh, kw: views, no copy
    out, arg = windows.reshape(*windows.shape[:4], kh * kw).max(dim=-1)
    rows = torch.arange(oh, device=x.device).view(-1, 1) * sh + torch.div(arg, kw, rounding_mode="floor")
    cols = torch.arange(ow, device=x.device) * sw + arg % kw
    return out, rows * x.shape[-1] + cols


def max_pool2d_backward(grad: Tensor, index: Tensor, input_shape: torch.Size | tuple[int, ...]) -> Tensor:
    """Route each output gradient back to the input pixel that held the maximum (windows
    that overlap may send several gradients to one pixel: they add up)."""
    n, c, h, w = input_shape
    grad_x = grad.new_zeros(n, c, h * w)
    grad_x.scatter_add_(2, index.flatten(2), grad.flatten(2))
    return grad_x.view(n, c, h, w)

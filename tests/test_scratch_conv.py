"""By-hand convolution and pooling against torch.nn.functional, scipy.signal and an edge
detection example."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from visionlab.scratch import conv2d, conv2d_backward, convolve2d, correlate2d, max_pool2d, max_pool2d_backward

signal = pytest.importorskip("scipy.signal", reason="scipy is a dev dependency: pip install -e .[dev]")

TOL = dict(atol=1e-5, rtol=1e-5)
F64 = torch.float64


@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 2), (2, 1), ((2, 1), (0, 1))])
def test_conv2d_forward_and_backward_match_torch(stride, padding) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 6, generator=gen, dtype=F64)
    w = torch.randn(4, 3, 3, 2, generator=gen, dtype=F64)
    b = torch.randn(4, generator=gen, dtype=F64)
    y = conv2d(x, w, b, stride, padding)
    grad = torch.randn(y.shape, generator=gen, dtype=F64)
    xt, wt, bt = (t.clone().requires_grad_(True) for t in (x, w, b))
    want = F.conv2d(xt, wt, bt, stride=stride, padding=padding)
    (want * grad).sum().backward()
    torch.testing.assert_close(y, want.detach(), **TOL)
    for ours, theirs in zip(conv2d_backward(grad, x, w, stride, padding), (xt.grad, wt.grad, bt.grad)):
        torch.testing.assert_close(ours, theirs, **TOL)


def test_conv2d_rejects_mismatched_channels_and_oversized_kernels() -> None:
    with pytest.raises(ValueError, match="input has 2 channels but the kernel expects 3"):
        conv2d(torch.zeros(1, 2, 5, 5), torch.zeros(1, 3, 3, 3))
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv2d(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 3, 3))


@pytest.mark.parametrize("kernel,stride", [(2, 2), (3, 2), (2, 1)])
def test_max_pool2d_matches_torch_including_indices(kernel: int, stride: int) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 7, 8, generator=gen, dtype=F64)
    y, index = max_pool2d(x, kernel, stride)
    want, want_index = F.max_pool2d(x, kernel, stride, return_indices=True)
    torch.testing.assert_close(y, want)
    assert torch.equal(index, want_index)
    grad = torch.randn(y.shape, generator=gen, dtype=F64)
    xt = x.clone().requires_grad_(True)
    (F.max_pool2d(xt, kernel, stride) * grad).sum().backward()
    torch.testing.assert_close(max_pool2d_backward(grad, index, x.shape), xt.grad, **TOL)


@pytest.mark.parametrize("mode", ["valid", "full"])
def test_correlate_and_convolve_match_scipy(mode: str) -> None:
    gen = torch.Generator().manual_seed(2)
    image = torch.randn(9, 7, generator=gen, dtype=F64)
    kernel = torch.randn(3, 2, generator=gen, dtype=F64)  # asymmetric: flipping matters
    corr = correlate2d(image, kernel, mode)
    conv = convolve2d(image, kernel, mode)
    torch.testing.assert_close(corr, torch.from_numpy(signal.correlate2d(image.numpy(), kernel.numpy(), mode)), **TOL)
    torch.testing.assert_close(conv, torch.from_numpy(signal.convolve2d(image.numpy(), kernel.numpy(), mode)), **TOL)
    assert not torch.allclose(corr, conv)
    # what torch calls conv2d is scipy's correlate2d
    torch.testing.assert_close(
        corr, F.conv2d(image[None, None], kernel[None, None], padding=(2, 1) if mode == "full" else 0)[0, 0], **TOL
    )


def test_correlate2d_names_allowed_modes_and_shapes() -> None:
    with pytest.raises(ValueError, match="mode='same' is unknown; allowed: valid, full"):
        correlate2d(torch.zeros(4, 4), torch.zeros(2, 2), "same")
    with pytest.raises(ValueError, match="must be 2-D"):
        correlate2d(torch.zeros(1, 4, 4), torch.zeros(2, 2))


def test_edge_detection_finds_the_border_of_a_square_like_scipy() -> None:
    """The notes' edge detection (`convolve2d(img, kernel, 'valid')`) on a synthetic image:
    a bright square on black. The Laplacian kernel answers 0 on flat areas and non-zero
    only along the square's border; a Sobel kernel's sign tells left edges from right ones,
    and flips between convolution and correlation."""
    image = torch.zeros(16, 16, dtype=F64)
    image[4:12, 4:12] = 1.0
    laplacian = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=F64)
    edges = convolve2d(image, laplacian, "valid")
    torch.testing.assert_close(edges, torch.from_numpy(signal.convolve2d(image.numpy(), laplacian.numpy(), "valid")))
    # non-zero exactly where a pixel differs from one of its 4 neighbours: the border
    # rings just inside and just outside the square (valid pixel (i, j) is image (i+1, j+1))
    differs = [
        [
            any(image[i, j] != image[i + di, j + dj] for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)))
            for j in range(1, 15)
        ]
        for i in range(1, 15)
    ]
    assert torch.equal(edges != 0, torch.tensor(differs))
    assert (edges != 0).sum() == 2 * 4 * 8 - 4  # corners of the outer ring touch no square pixel

    sobel_x = torch.tensor([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=F64)
    conv, corr = convolve2d(image, sobel_x), correlate2d(image, sobel_x)
    torch.testing.assert_close(conv, torch.from_numpy(signal.convolve2d(image.numpy(), sobel_x.numpy(), "valid")))
    torch.testing.assert_close(conv, -corr)
    row = conv[7]  # through the middle of the square: rising edge at left, falling at right
    assert row[2] > 0 and row[10] < 0 and row[5] == 0

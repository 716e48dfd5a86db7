"""Deterministic-mode convolutions (ssl_challenge.core.chunked_conv): torch's values and gradients, the same bytes with
1 and 2 threads, fixed chunks, and torch's own function wherever the chunked path does not apply."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_challenge.core import chunked_conv
from ssl_challenge.core.numerics import configure_torch, start_numerics
from ssl_challenge.core.threads import torch_threads

# (batch, in, out, size, stride, padding, dilation, groups, bias): a batch that is not a multiple of the chunk
# size, strided, asymmetric padding, dilated, grouped, 1x1, with and without bias.
CASES = [
    (70, 3, 8, 12, 1, (1, 1), 1, 1, False),
    (33, 8, 16, 9, 2, (1, 0), 1, 1, True),
    (40, 8, 8, 10, 1, (2, 2), 2, 2, True),
    (65, 16, 4, 7, 2, (0, 0), 1, 1, False),
]


@pytest.fixture
def onednn_off():
    """Deterministic mode's global state (oneDNN off, the chunked function installed), restored afterwards."""
    previous_enabled, previous_threads = torch.backends.mkldnn.enabled, torch.get_num_threads()
    torch.backends.mkldnn.enabled = False
    chunked_conv.install()
    yield
    torch.backends.mkldnn.enabled = previous_enabled
    torch.set_num_threads(previous_threads)


@pytest.fixture
def chunk_calls(monkeypatch):
    """The number of chunks of each call of ``run_chunks`` (the chunked path taken), in order."""
    calls = []
    original = chunked_conv.run_chunks
    monkeypatch.setattr(chunked_conv, "run_chunks", lambda function, chunks: calls.append(len(chunks)) or
                        original(function, chunks))
    return calls


def case_tensors(batch, channels_in, channels_out, size, stride, padding, dilation, groups, bias, seed=0):
    generator = torch.Generator().manual_seed(seed)
    kernel = 1 if channels_in == 16 else 3
    images = torch.randn(batch, channels_in, size, size, generator=generator)
    weight = torch.randn(channels_out, channels_in // groups, kernel, kernel, generator=generator) * 0.2
    bias_tensor = torch.randn(channels_out, generator=generator) if bias else None
    return images, weight, bias_tensor, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def forward_and_gradients(images, weight, bias, geometry, function):
    images, weight = images.clone().requires_grad_(), weight.clone().requires_grad_()
    bias = bias.clone().requires_grad_() if bias is not None else None
    output = function(images, weight, bias, **geometry)
    upstream = torch.linspace(-1.0, 1.0, output.numel()).reshape(output.shape)
    (output * upstream).sum().backward()
    return [output.detach(), images.grad, weight.grad] + ([bias.grad] if bias is not None else [])


@pytest.mark.parametrize("case", CASES)
def test_values_and_gradients_are_torchs(onednn_off, case):
    images, weight, bias, geometry = case_tensors(*case)
    chunked = forward_and_gradients(images, weight, bias, geometry, chunked_conv.conv2d)
    # The reference in float64: torch's own convolution, where the chunked path does not apply.
    exact = forward_and_gradients(images.double(), weight.double(), bias.double() if bias is not None else None,
                                  geometry, chunked_conv.conv2d)
    assert len(chunked) == len(exact) == (4 if case[-1] else 3)
    for ours, reference in zip(chunked, exact):
        assert ours.dtype == torch.float32 and ours.shape == reference.shape
        torch.testing.assert_close(ours.double(), reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", CASES)
def test_one_and_two_threads_give_the_same_bytes(onednn_off, case):
    images, weight, bias, geometry = case_tensors(*case)
    results = {}
    for threads in (1, 2, 3):
        with torch_threads(threads):
            results[threads] = forward_and_gradients(images, weight, bias, geometry, chunked_conv.conv2d)
    for threads in (2, 3):
        for one, other in zip(results[1], results[threads]):
            assert torch.equal(one, other)


def test_the_weight_gradient_adds_fixed_chunks_in_order(onednn_off):
    # Two chunks: the gradient of 2 x CHUNK_IMAGES images is chunk 1's plus chunk 2's, bit for bit, whatever the
    # thread count (one chunk per thread with 2 threads).
    images, weight, _, geometry = case_tensors(2 * chunked_conv.CHUNK_IMAGES, 3, 8, 12, 1, (1, 1), 1, 1, False)
    whole = forward_and_gradients(images, weight, None, geometry, chunked_conv.conv2d)[2]
    # Each chunk on its own, with its slice of the whole batch's upstream gradient.
    upstream = torch.linspace(-1.0, 1.0, 2 * chunked_conv.CHUNK_IMAGES * 8 * 12 * 12).reshape(-1, 8, 12, 12)
    parts = []
    for part, grads in zip(images.split(chunked_conv.CHUNK_IMAGES), upstream.split(chunked_conv.CHUNK_IMAGES)):
        weight_copy = weight.clone().requires_grad_()
        (chunked_conv.conv2d(part, weight_copy, None, **geometry) * grads).sum().backward()
        parts.append(weight_copy.grad)
    assert torch.equal(whole, parts[0] + parts[1])
    with torch_threads(2):
        assert torch.equal(forward_and_gradients(images, weight, None, geometry, chunked_conv.conv2d)[2], whole)


def test_torchs_own_function_where_the_chunked_path_does_not_apply(onednn_off, chunk_calls):
    calls = chunk_calls
    images, weight, _, geometry = case_tensors(*CASES[0])
    chunked_conv.conv2d(images, weight, None, **geometry)
    assert calls == [3]  # 70 images: chunks of 32, 32 and 6
    chunked_conv.conv2d(images.double(), weight.double(), None, **geometry)  # float64
    chunked_conv.conv2d(images, weight, None, padding="same")  # a string padding
    torch.backends.mkldnn.enabled = True  # fast mode
    fast = chunked_conv.conv2d(images, weight, None, **geometry)
    assert calls == [3]
    assert torch.equal(fast, chunked_conv._torch_conv2d(images, weight, None, **geometry))


def test_only_a_deterministic_job_start_installs_the_chunked_conv2d(monkeypatch):
    enabled, threads = torch.backends.mkldnn.enabled, torch.get_num_threads()
    monkeypatch.setattr(F, "conv2d", chunked_conv._torch_conv2d)  # a fresh process: torch's own function
    try:
        configure_torch(1, deterministic=True)  # torch's flags only
        assert F.conv2d is chunked_conv._torch_conv2d and not torch.backends.mkldnn.enabled
        start_numerics(1, deterministic=False)
        assert F.conv2d is chunked_conv._torch_conv2d and torch.backends.mkldnn.enabled
        record = start_numerics(1, deterministic=True)
        assert F.conv2d is chunked_conv.conv2d and not torch.backends.mkldnn.enabled
        assert record["onednn_enabled"] is False and record["torch_threads"] == 1
    finally:
        torch.backends.mkldnn.enabled = enabled
        torch.set_num_threads(threads)


def test_deterministic_mode_routes_every_conv2d_module_through_the_chunks(onednn_off, chunk_calls):
    calls = chunk_calls
    start_numerics(1, deterministic=True)
    assert F.conv2d is chunked_conv.conv2d and not torch.backends.mkldnn.enabled
    network = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    network(torch.randn(40, 3, 8, 8)).sum().backward()
    assert calls == [2, 2, 2, 2]  # two forwards, then two backwards, each over 2 chunks
    configure_torch(1, deterministic=False)  # oneDNN back on: torch's function, although still installed
    network(torch.randn(40, 3, 8, 8)).sum().backward()
    assert calls == [2, 2, 2, 2]


def test_autocast_inference_mode_and_the_autograd_graph(onednn_off, chunk_calls):
    calls = chunk_calls
    images, weight, _, geometry = case_tensors(*CASES[0])
    with torch_threads(2):
        weight.requires_grad_()
        output = chunked_conv.conv2d(images, weight, None, **geometry)
        # one node for the whole convolution: the pool threads (grad mode on by default) recorded nothing
        assert type(output.grad_fn).__name__ == "_ChunkedConv2dBackward"
        assert [next_function for next_function, _ in output.grad_fn.next_functions if next_function is not None]
        with torch.inference_mode():
            inferred = chunked_conv.conv2d(images, weight.detach(), None, **geometry)
        assert torch.equal(inferred, output.detach())
        assert calls == [3, 3]
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 autocast: torch's own function (fast mode)
            mixed = chunked_conv.conv2d(images, weight, None, **geometry)
        assert mixed.dtype == torch.bfloat16 and calls == [3, 3]

"""DP-SGD for the FAM: exact per-sample clipping, noise of the configured size, a head that cannot leak."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from fedmedclip.federation.codec import CodecConfig, decode_update, encode_update
from fedmedclip.federation.delta import alive_rows_of_state, fam_delta
from fedmedclip.model.fam import build_fam, fam_state
from fedmedclip.privacy.dp_round import DpSgdPlan, train_private_round
from fedmedclip.privacy.dp_sgd import add_gaussian_noise, clipped_sum, noisy_mean_gradient, per_sample_gradients

DIM, CLASSES, SCALE = 16, 3, 100.0


def _data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    text = F.normalize(torch.randn(CLASSES, DIM, generator=g), dim=-1)
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    features = text[labels] * 0.5 + torch.randn(n, DIM, generator=g)
    return features, labels, text


def _one_at_a_time(fam, features, labels, text):  # type: ignore[no-untyped-def]
    """Each sample's gradient from its own backward pass, the reference the vectorised path must match."""
    grads = []
    for x, y in zip(features, labels, strict=True):
        fam.zero_grad(set_to_none=True)
        F.cross_entropy(SCALE * fam(x.unsqueeze(0)) @ text.T, y.unsqueeze(0)).backward()
        grads.append({name: p.grad.detach().clone() for name, p in fam.named_parameters()})
    return grads


def test_per_sample_gradients_and_clipping_match_one_sample_at_a_time() -> None:
    features, labels, text = _data(7)
    features, text = features.double(), text.double()  # float64, so only the method can differ, not rounding
    fam = build_fam(DIM, seed=3).double()
    reference = _one_at_a_time(fam, features, labels, text)
    vectorised = per_sample_gradients(fam, features, labels, text, SCALE)
    for i, one in enumerate(reference):
        for name, g in one.items():
            torch.testing.assert_close(vectorised[name][i], g, rtol=1e-9, atol=1e-12)
    norms = torch.stack([torch.sqrt(sum((g**2).sum() for g in one.values())) for one in reference])
    clip = float(norms.median()) * 1.01  # about half the samples get clipped, none sits on the bound
    expected = {name: torch.zeros_like(p) for name, p in fam.named_parameters()}
    for one, norm in zip(reference, norms, strict=True):
        factor = min(1.0, clip / float(norm))
        for name, g in one.items():
            expected[name] += factor * g
    summed, clipped = clipped_sum(fam, features, labels, text, SCALE, clip)
    assert clipped == int((norms > clip).sum()) >= 3
    for name in expected:
        torch.testing.assert_close(summed[name], expected[name], rtol=1e-9, atol=1e-12)
    # Each clipped contribution is bounded by C: one sample changes the sum by at most C.
    single, _ = clipped_sum(fam, features[:1], labels[:1], text, SCALE, clip)
    assert float(torch.sqrt(sum((g**2).sum() for g in single.values()))) <= clip * (1 + 1e-5)


def test_noise_has_standard_deviation_sigma_times_clip_over_many_steps() -> None:
    features, labels, text = _data(6)
    fam = build_fam(DIM, seed=1)
    sigma, clip, batch = 1.7, 0.3, 6.0
    exact, _ = clipped_sum(fam, features, labels, text, SCALE, clip)
    generator = torch.Generator().manual_seed(11)
    samples = []
    for _ in range(60):
        noisy, _ = noisy_mean_gradient(
            fam, features, labels, text, SCALE, clip_norm=clip, sigma=sigma, expected_batch=batch, generator=generator
        )
        samples.append(torch.cat([(noisy[n] * batch - exact[n]).flatten() for n in exact]))
    noise = torch.stack(samples)  # 60 steps × |FAM| coordinates of pure noise
    n = noise.numel()
    assert abs(float(noise.mean())) < 4 * sigma * clip / n**0.5
    # The sample std of n normal draws is within ±4·std/√(2n) of the truth with overwhelming probability.
    assert abs(float(noise.std()) - sigma * clip) < 4 * sigma * clip / (2 * n) ** 0.5
    # Steps draw fresh noise: consecutive steps are uncorrelated.
    corr = torch.corrcoef(noise[:2])[0, 1]
    assert abs(float(corr)) < 4 / noise.shape[1] ** 0.5
    zero = add_gaussian_noise({"x": torch.zeros(10)}, 0.0, clip, generator)
    assert torch.equal(zero["x"], torch.zeros(10))


def _round(head_seed: int, noise_seed: int = 5):  # type: ignore[no-untyped-def]
    features, labels, text = _data(40)
    global_fam = fam_state(build_fam(DIM, seed=0))
    plan = DpSgdPlan(clip_norm=0.5, sigma=1.0, sample_rate=0.25, steps=4, noise_seed=noise_seed)
    result = train_private_round(features, labels, text, global_fam, None, logit_scale=SCALE, plan=plan, seed=head_seed)
    return global_fam, result


def test_private_round_fam_depends_on_nothing_the_head_learns_and_the_residual_leaks_nothing() -> None:
    global_fam, first = _round(head_seed=1)
    _, second = _round(head_seed=2)  # a different non-private head: other weights, other KD targets
    assert any(not torch.equal(first.head_state[k], second.head_state[k]) for k in first.head_state)
    for name in first.fam_state:
        assert torch.equal(first.fam_state[name], second.fam_state[name]), name
    assert any(not torch.equal(first.fam_state[k], global_fam[k]) for k in global_fam)
    # The codec and its error feedback only see the noised FAM delta: equal deltas, equal bytes and residual.
    encoded = [
        encode_update(fam_delta(r.fam_state, global_fam), alive_rows_of_state(r.fam_state), None, CodecConfig())
        for r in (first, second)
    ]
    assert encoded[0].payload == encoded[1].payload
    delta = fam_delta(first.fam_state, global_fam)
    decoded = decode_update(encoded[0].payload, encoded[0].sha256).to_dense()
    for name, residual in encoded[0].residual.items():
        assert torch.equal(residual, encoded[1].residual[name])
        torch.testing.assert_close(residual + decoded[name], delta[name], atol=1e-6, rtol=0)
    _, other_noise = _round(head_seed=1, noise_seed=6)
    assert any(not torch.equal(first.fam_state[k], other_noise.fam_state[k]) for k in global_fam)
    assert 0.0 <= first.metrics["dp_clipped_fraction"] <= 1.0

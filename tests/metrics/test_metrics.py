"""FID, KID, precision/recall and IS: float64 reference maths, properties on real digits, evaluation.

The reference implementations below are written independently of the library (scipy.linalg.sqrtm,
an explicit unbiased polynomial-kernel MMD, scipy's cdist); only KID's subset sampling is shared by
construction, so that both sides average over the same subsets.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import cdist

from ganforge.errors import ConfigError, DataError, GanforgeError
from ganforge.metrics import evaluate_images, format_table, get_feature_net, scores
from ganforge.metrics.evaluate import check_compatible
from conftest import shared_cache_env

# --------------------------------------------------------------------------- fixtures


pytestmark = pytest.mark.usefixtures("shared_metrics_cache", "no_network")


@pytest.fixture(scope="module")
def mnist5k():
    from ganforge.data import load_dataset

    return load_dataset("mnist5k", split="train", quiet=True), load_dataset(
        "mnist5k", split="test", quiet=True
    )


@pytest.fixture(scope="module")
def mnist5k_net(ganforge_cache):
    with shared_cache_env(ganforge_cache):  # module scope: set up before any per-test fixture runs
        return get_feature_net("mnist5k", quiet=True)


def gaussian_sets(
    seed: int = 0, n_fake: int = 400, n_real: int = 300, dim: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float64 feature sets with different means and correlated, different covariances."""
    g = torch.Generator().manual_seed(seed)
    mix_a = torch.randn(dim, dim, generator=g, dtype=torch.float64) / dim**0.5
    mix_b = torch.randn(dim, dim, generator=g, dtype=torch.float64) / dim**0.5
    fake = torch.randn(n_fake, dim, generator=g, dtype=torch.float64) @ mix_a + 0.5
    real = torch.randn(n_real, dim, generator=g, dtype=torch.float64) @ (
        mix_b + torch.eye(dim, dtype=torch.float64)
    )
    return fake, real


# --------------------------------------------------------------------------- independent references


def ref_fid(fake: np.ndarray, real: np.ndarray) -> float:
    mu_f, mu_r = fake.mean(0), real.mean(0)
    cov_f = (fake - mu_f).T @ (fake - mu_f) / (len(fake) - 1)
    cov_r = (real - mu_r).T @ (real - mu_r) / (len(real) - 1)
    covmean = scipy.linalg.sqrtm(cov_f @ cov_r).real
    return float(((mu_f - mu_r) ** 2).sum() + np.trace(cov_f) + np.trace(cov_r) - 2 * np.trace(covmean))


def ref_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    def kernel(a, b):  # cubic polynomial kernel of Bińkowski et al. 2018
        return (a @ b.T / a.shape[1] + 1.0) ** 3

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    m, n = len(x), len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2 * kxy.mean()
    )


def ref_kid(fake: np.ndarray, real: np.ndarray, subsets: int, size: int, seed: int) -> tuple[float, float]:
    rng = np.random.RandomState(seed)  # same subset draws as the library, so both average the same MMDs
    values = []
    for _ in range(subsets):
        f = fake[rng.choice(len(fake), size, replace=False)]
        r = real[rng.choice(len(real), size, replace=False)]
        values.append(ref_mmd2_unbiased(f, r))
    return float(np.mean(values)), float(np.std(values))


def ref_precision_recall(fake: np.ndarray, real: np.ndarray, k: int = 3) -> tuple[float, float]:
    # Column 0 of each sorted row is the sample itself (distance 0), so column k is its k-th neighbour.
    radius_real = np.sort(cdist(real, real), axis=1)[:, k]
    radius_fake = np.sort(cdist(fake, fake), axis=1)[:, k]
    d = cdist(fake, real)
    precision = (d <= radius_real[None, :]).any(axis=1).mean()
    recall = (d.T <= radius_fake[None, :]).any(axis=1).mean()
    return float(precision), float(recall)


def ref_inception_score(logits: np.ndarray) -> float:
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    marginal = p.mean(0, keepdims=True)
    return float(np.exp((p * (np.log(p) - np.log(marginal))).sum(1).mean()))


# --------------------------------------------------------------------------- maths vs reference


def test_fid_equals_float64_scipy_reference():
    fake, real = gaussian_sets()
    expected = ref_fid(fake.numpy(), real.numpy())
    assert expected > 1.0  # the sets really differ: a relative check on ~0 would prove nothing
    assert scores.fid(fake, real) == pytest.approx(expected, rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric():
    fake, real = gaussian_sets(seed=1)
    assert abs(scores.fid(real, real)) < 1e-8
    assert scores.fid(fake, real) == pytest.approx(scores.fid(real, fake), rel=1e-9)


def test_fid_accepts_float32_features_and_computes_in_float64():
    fake, real = gaussian_sets(seed=2)
    assert scores.fid(fake.float(), real.float()) == pytest.approx(
        ref_fid(fake.float().double().numpy(), real.float().double().numpy()), rel=1e-6
    )


@pytest.mark.parametrize("subsets,size", [(1, 300), (7, 120)])
def test_kid_equals_own_unbiased_polynomial_mmd(subsets, size):
    fake, real = gaussian_sets(seed=3)
    mean, std = scores.kid(fake, real, subsets=subsets, subset_size=size, seed=5)
    ref_mean, ref_std = ref_kid(fake.numpy(), real.numpy(), subsets, size, seed=5)
    assert ref_mean > 0.01
    assert mean == pytest.approx(ref_mean, rel=1e-6)
    assert std == pytest.approx(ref_std, rel=1e-6, abs=1e-12)


def test_kid_subset_larger_than_the_sets_is_capped():
    fake, real = gaussian_sets(seed=4, n_fake=50, n_real=40)
    mean, _ = scores.kid(fake, real, subsets=1, subset_size=1000, seed=0)
    assert mean == pytest.approx(ref_kid(fake.numpy(), real.numpy(), 1, 40, seed=0)[0], rel=1e-6)


def test_precision_recall_equal_scipy_reference():
    fake, real = gaussian_sets(seed=5, n_fake=350, n_real=280)
    p, r = scores.precision_recall(fake, real, batch_size=97)  # odd block size: exercises the chunking
    ref_p, ref_r = ref_precision_recall(fake.numpy(), real.numpy())
    assert 0.0 < ref_p < 1.0 and 0.0 < ref_r < 1.0
    assert p == pytest.approx(ref_p, rel=1e-6)
    assert r == pytest.approx(ref_r, rel=1e-6)


def test_precision_recall_of_a_set_with_itself_is_one_one():
    _, real = gaussian_sets(seed=6)
    assert scores.precision_recall(real, real) == (1.0, 1.0)


def test_inception_score_equals_reference_and_bounds():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(500, 10, generator=g, dtype=torch.float64) * 3
    mean, std = scores.inception_score(logits, splits=1)
    assert mean == pytest.approx(ref_inception_score(logits.numpy()), rel=1e-6) and std == 0.0
    # Bounds: identical predictions give 1; confident, balanced predictions approach the class count.
    assert scores.inception_score(torch.zeros(100, 10, dtype=torch.float64))[0] == pytest.approx(1.0)
    confident = 50.0 * torch.eye(10, dtype=torch.float64).repeat(20, 1)
    assert scores.inception_score(confident, splits=1)[0] == pytest.approx(10.0, rel=1e-6)


def test_score_argument_errors_are_one_line():
    fake, real = gaussian_sets()
    with pytest.raises(GanforgeError, match="width") as info:
        scores.fid(fake, real[:, :5])
    assert "\n" not in str(info.value)
    with pytest.raises(GanforgeError, match="k=3"):
        scores.precision_recall(fake[:3], real)
    with pytest.raises(GanforgeError, match="NaN"):
        scores.fid(fake * float("nan"), real)


# --------------------------------------------------------------------------- properties on real digits


def _noisy(images: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    x = images.to(torch.float32) / 127.5 - 1.0 + sigma * noise
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    if sigma == 0:
        return images
    size = 2 * int(np.ceil(3 * sigma)) + 1
    return (
        gaussian_blur(images.to(torch.float32), [size, size], [sigma, sigma])
        .round()
        .clamp(0, 255)
        .to(torch.uint8)
    )


def test_real_test_vs_train_fid_is_small_compared_with_noise(mnist5k, mnist5k_net):
    train, test = mnist5k
    train_f, _ = mnist5k_net.extract(train.images)
    test_f, _ = mnist5k_net.extract(test.images)
    noise = torch.randint(
        0, 256, test.images.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    noise_f, _ = mnist5k_net.extract(noise)
    real_vs_real, noise_vs_real = scores.fid(test_f, train_f), scores.fid(noise_f, train_f)
    assert real_vs_real < 0.05 * noise_vs_real, (real_vs_real, noise_vs_real)
    assert scores.precision_recall(test_f, test_f) == (1.0, 1.0)


@pytest.mark.parametrize(
    "kind,levels", [("noise", [0.0, 0.1, 0.2, 0.4, 0.8]), ("blur", [0.0, 0.5, 1.0, 1.5, 2.5])]
)
def test_fid_grows_monotonically_with_corruption(mnist5k, mnist5k_net, kind, levels):
    train, test = mnist5k
    train_f, _ = mnist5k_net.extract(train.images)
    noise = torch.randn(test.images.shape, generator=torch.Generator().manual_seed(1))
    fids = []
    for level in levels:
        corrupted = _noisy(test.images, noise, level) if kind == "noise" else _blurred(test.images, level)
        fids.append(scores.fid(mnist5k_net.extract(corrupted)[0], train_f))
    assert all(a < b for a, b in zip(fids[:-1], fids[1:], strict=True)), fids


# --------------------------------------------------------------------------- evaluate_images


def test_evaluate_images_reports_scores_with_protocol(mnist5k, mnist5k_net, ganforge_cache):
    train, _ = mnist5k
    result = evaluate_images(
        train.images[:600], "mnist5k", seed=3, kid_subsets=4, kid_subset_size=200, quiet=True
    )
    json.dumps(result)  # JSON-able as it stands
    protocol = result["protocol"]
    assert protocol["features"] == mnist5k_net.id and protocol["feature_hash"] == mnist5k_net.hash
    assert protocol["feature_test_accuracy"] == mnist5k_net.test_accuracy
    assert (protocol["n_fake"], protocol["n_real"], protocol["reference"], protocol["seed"]) == (
        600,
        1000,
        "mnist5k:test",
        3,
    )
    assert protocol["kid_subset_size"] == 200 and protocol["pr_k"] == 3
    assert 0.0 <= result["precision"] <= 1.0 and 0.0 <= result["recall"] <= 1.0
    assert 1.0 <= result["inception_score"] <= 10.0
    assert result["fid"] >= 0.0
    table = format_table(result)
    assert "FID" in table and "KID" in table and "Inception Score" in table
    assert f"sha256 {mnist5k_net.hash[:12]}" in table and "600 fake vs 1000 real (mnist5k:test)" in table
    # Real features were cached and are reused: same scores without extracting the reference again.
    assert list((ganforge_cache / "metric_stats").glob("mnist5k-test-1000-*.safetensors"))
    again = evaluate_images(
        train.images[:600], "mnist5k", seed=3, kid_subsets=4, kid_subset_size=200, quiet=True
    )
    assert again == result


def test_evaluate_images_reference_subset_and_resized_fakes(mnist5k, mnist5k_net):
    from ganforge.data import convert_images

    train, _ = mnist5k
    big = convert_images(train.images[:200], image_size=64)  # a 64x64 generator trained on MNIST
    result = evaluate_images(big, "mnist5k", n_real=300, kid_subset_size=100, quiet=True)
    assert result["protocol"]["n_real"] == 300
    small = evaluate_images(train.images[:200], "mnist5k", n_real=300, kid_subset_size=100, quiet=True)
    assert result["fid"] == pytest.approx(small["fid"], rel=0.5)  # resizing back is close, not exact


def test_mismatched_dataset_is_refused_unless_conversion_makes_sense(mnist5k):
    train, _ = mnist5k
    colour = torch.randint(
        0, 256, (20, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    with pytest.raises(DataError, match="colour") as info:
        evaluate_images(colour, "mnist5k", quiet=True)
    assert "\n" not in str(info.value)
    gray_as_rgb = train.images[:20].expand(-1, 3, -1, -1)
    check_compatible(gray_as_rgb, train.images, "mnist5k")  # grayscale stored as RGB converts fine
    with pytest.raises(DataError, match="grayscale"):
        check_compatible(train.images[:20], colour, "cifar10")


def test_bad_arguments_fail_with_one_line(mnist5k):
    train, _ = mnist5k
    with pytest.raises(ConfigError, match="auto, classifier, inception"):
        evaluate_images(train.images[:20], "mnist5k", features="vgg", quiet=True)
    with pytest.raises(DataError, match="uint8"):
        evaluate_images(train.images[:20].float(), "mnist5k", quiet=True)
    with pytest.raises(DataError, match="more than 3"):
        evaluate_images(train.images[:3], "mnist5k", quiet=True)


def test_unlabelled_folder_without_inception_weights_names_the_options(tmp_path, mnist5k):
    from PIL import Image

    train, _ = mnist5k
    for i in range(6):
        Image.fromarray(train.images[i, 0].numpy()).save(tmp_path / f"{i}.png")
    with pytest.raises(GanforgeError) as info:
        evaluate_images(train.images[:10], str(tmp_path), quiet=True)
    message = str(info.value)
    assert (
        "\n" not in message and "weights-inception-2015-12-05-6726825d.pth" in message and "--data" in message
    )
    with pytest.raises(ConfigError, match="--features inception"):
        evaluate_images(train.images[:10], str(tmp_path), features="classifier", quiet=True)

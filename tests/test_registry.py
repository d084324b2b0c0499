"""Registries whose names are the API, and the generic config machine that reads its choices from them."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest
import torch

from ganforge.config import Config, apply_overrides, describe, differences, option, resume_keys, validate
from ganforge.data import DATASETS
from ganforge.errors import ConfigError
from ganforge.gan.config import GANConfig
from ganforge.losses import LOSSES
from ganforge.gan.recipes import RECIPES, get_recipe
from ganforge.gan.step import D_UPDATES
from ganforge.gan.models import INITS, MODELS, build_models, gan_models
from ganforge.optim import OPTIMIZERS
from ganforge.registry import Registry


def test_registry_get_names_and_one_line_error():
    reg: Registry[int] = Registry("colour")
    reg.register("red", 1)

    @reg.register("blue")
    def blue():
        return 2

    assert reg.names() == ("red", "blue") and "red" in reg and len(reg) == 2
    assert reg.get("blue")() == 2 and reg["red"] == 1
    with pytest.raises(ConfigError, match=r"^unknown colour 'green'; valid colours: red, blue$"):
        reg.get("green")
    with pytest.raises(ValueError, match="twice"):
        reg.register("red", 3)


def test_config_choices_come_from_the_registries():
    """Each name list is declared once: the config's valid values are the registry's names."""
    by_name = {f.name: f.metadata["choices"] for f in fields(GANConfig)}
    assert by_name["loss"] is LOSSES and by_name["d_update"] is D_UPDATES and by_name["init"] is INITS
    assert by_name["g_optimizer"] is OPTIMIZERS and by_name["d_optimizer"] is OPTIMIZERS
    cfg = get_recipe("default")
    for key, registry in (("loss", LOSSES), ("d_update", D_UPDATES), ("g_optimizer", OPTIMIZERS),
                          ("model", MODELS)):
        with pytest.raises(ConfigError) as err:
            apply_overrides(cfg, [f"{key}=nonsense"])
        names = gan_models() if key == "model" else registry.names()
        assert str(err.value).endswith("valid: " + ", ".join(names))
    # A newly registered loss is at once a valid config value.
    LOSSES.register("test-only-loss", LOSSES.get("ns"))
    try:
        assert apply_overrides(cfg, ["loss=test-only-loss"]).loss == "test-only-loss"
    finally:
        LOSSES._items.pop("test-only-loss")


def test_model_properties_live_with_the_model():
    assert MODELS.get("tf-dcgan").sizes == (28,) and MODELS.get("mlp").sizes is None
    assert {m for m in gan_models() if MODELS.get(m).cpu_channels_last} == {"upconv", "default", "dcgan", "tf-dcgan"}
    with pytest.raises(ConfigError, match="valid sizes are 32, 64"):
        apply_overrides(get_recipe("dcgan"), ["image_size=28"])


def _config_for(model: str):
    """The first recipe on `model`, else the default recipe switched to it, at its smallest size."""
    cfg = next((r.config for r in RECIPES.values() if r.config.model == model), None)
    if cfg is None:
        cfg = apply_overrides(get_recipe("default"), [f"model={model}"])
    sizes = MODELS.get(model).sizes
    small = {"base_filters": 8} if model in ("dcgan", "default") else {}
    return apply_overrides(cfg, {"image_size": min(sizes) if sizes else cfg.image_size, **small})


@pytest.mark.parametrize("model", gan_models())
def test_every_registered_model_trains_both_nets(model):
    """Forward and backward of G and D, with D split into a trunk and a head."""
    cfg = _config_for(model)
    torch.manual_seed(0)
    G, D = build_models(cfg)
    z = torch.randn(4, cfg.latent_dim)
    x = G(z)
    assert x.shape == (4, cfg.channels, cfg.image_size, cfg.image_size)
    torch.manual_seed(1)  # the same dropout masks for both calls
    logits = D.head(D.features(x)).reshape(-1)
    torch.manual_seed(1)
    assert torch.equal(logits, D(x)) and logits.shape == (4,)
    (logits.square().mean()).backward()
    for net in (G, D):
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(float(g.abs().sum()) > 0 for g in grads)


def test_discriminator_loads_weights_saved_before_the_split():
    cfg = _config_for("upconv")
    _, D = build_models(cfg)
    legacy = {}
    split = len(D.trunk)
    for key, value in D.state_dict().items():  # the one-Sequential names of the first version
        part, index, rest = key.split(".", 2)
        legacy[f"net.{int(index) + (split if part == 'head' else 0)}.{rest}"] = value + 1
    _, fresh = build_models(cfg)
    fresh.load_state_dict(legacy)
    for key, value in D.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value + 1), key


def test_datasets_are_a_registry():
    assert {"mnist", "fashion-mnist", "cifar10", "cifar100", "mnist5k", "digits"} <= set(DATASETS)


# ---- the generic config machine, on a config class of its own ------------------------------------------

REGISTRY: Registry = Registry("shape")
REGISTRY.register("square", 4)
REGISTRY.register("triangle", 3)


@dataclass
class ToyConfig(Config):
    VERSION = 3
    name: str = option("toy", "a name")
    shape: str = option("square", "one of the registry's shapes", choices=REGISTRY)
    size: int = option(8, "pixels", gt=0)
    rate: float = option(0.5, "a probability", ge=0, lt=1, resume=True)
    widths: tuple[int, ...] = option((16, 32), "channel widths")
    tags: list[str] = option(["a"], "free tags")
    limit: int | None = option(None, "optional cap", ge=0)
    flag: bool = option(False, "a switch")
    version: int = option(VERSION, "format version")

    def check(self) -> None:
        if self.limit is not None and self.limit > self.size:
            raise ConfigError("limit must not exceed size")


def test_overrides_parse_real_types():
    cfg = apply_overrides(ToyConfig(), ["widths=8, 16,32", "tags=x,y", "limit=none", "flag=yes", "size=1e1",
                                        "rate=0.25", "shape=triangle"])
    assert cfg.widths == (8, 16, 32) and cfg.tags == ["x", "y"] and cfg.limit is None and cfg.flag is True
    assert cfg.size == 10 and isinstance(cfg.size, int) and cfg.rate == 0.25 and cfg.shape == "triangle"
    for bad, needle in (("size=2.5", "expected int"), ("widths=8,x", "expected comma-separated ints"),
                        ("flag=maybe", "expected bool"), ("size=0", "size=0: must be greater than zero"),
                        ("rate=1", "rate=1.0: must be in [0, 1)"), ("limit=-1", "must be zero or more"),
                        ("shape=circle", "valid: square, triangle"), ("limit=9", "limit must not exceed"),
                        ("nope=1", "valid keys: name, shape, size"), ("size", "write key=value")):
        with pytest.raises(ConfigError) as err:
            apply_overrides(ToyConfig(), [bad])
        assert needle in str(err.value), (bad, str(err.value))


def test_json_round_trip_and_versions():
    cfg = apply_overrides(ToyConfig(), ["widths=1,2,3", "limit=4"])
    data = cfg.to_dict()
    assert data["widths"] == [1, 2, 3]  # JSON has lists
    assert ToyConfig.from_dict(data) == cfg  # ... and the tuple comes back
    with pytest.raises(ConfigError, match="version 4 is newer than this ganforge understands"):
        ToyConfig.from_dict({**data, "version": 4})
    with pytest.raises(ConfigError, match="unknown keys colour"):
        ToyConfig.from_dict({**data, "colour": "red"})
    with pytest.raises(ConfigError, match="bad value size='8': expected int"):
        ToyConfig.from_dict({**data, "size": "8"})
    assert resume_keys(ToyConfig) == ("rate",)
    assert differences(cfg, ToyConfig()) == {"widths": ([1, 2, 3], [16, 32]), "limit": (4, None)}
    rows = {r["key"]: r for r in describe(cfg)}
    assert rows["shape"]["choices"] == ["square", "triangle"] and rows["rate"]["resume"]
    assert rows["widths"]["help"] == "channel widths" and "version" not in rows
    assert validate(cfg) is cfg


def test_recipes_are_short_declarations_of_their_sources():
    for name, entry in RECIPES.items():
        assert entry.config.recipe == name and entry.source and entry.about
        validate(entry.config)
    # A recipe states only what its source does differently from the plain defaults.
    assert set(differences(get_recipe("seed004-mlp-mnist"), GANConfig())) == {
        "recipe", "model", "data", "opt_eps", "logit_clip", "batch_size", "steps", "sampling", "sample_every",
        "sample_name"}


@pytest.mark.parametrize("name", __import__("ganforge.metrics.registry", fromlist=["METRICS"]).METRICS.names())
def test_every_registered_metric_scores_and_states_its_protocol(name):
    from ganforge.metrics.registry import METRICS, Features

    gen = torch.Generator().manual_seed(0)
    real = torch.randn(300, 8, generator=gen, dtype=torch.float64)
    near, far = real + 0.05 * torch.randn(300, 8, generator=gen, dtype=torch.float64), real + 3.0
    logits = torch.randn(300, 10, generator=gen, dtype=torch.float64)
    metric = METRICS.get(name)
    assert metric.protocol and metric.name == name
    close = metric.compute(Features(near, real, logits, kid_subset_size=100))
    apart = metric.compute(Features(far, real, logits, kid_subset_size=100))
    assert close and all(isinstance(v, float) and v == v for v in close.values())
    if name == "fid":
        assert close["fid"] < 0.1 < 5 < apart["fid"]
    if name == "kid":
        assert close["kid_mean"] < apart["kid_mean"]
    if name == "precision_recall":
        assert close["precision"] > 0.8 > 0.2 > apart["precision"]

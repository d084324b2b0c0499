"""`ganforge eval`: score a run's generator (or a folder of images) against a reference dataset."""

from __future__ import annotations

import json
from pathlib import Path

from ganforge.errors import ConfigError, GanforgeError
from ganforge.gan.baselines import real_ceiling, untrained_generator
from ganforge.io import write_json


EVAL_NAME = "eval.json"  # beside the run (or the image folder) unless --out says otherwise


def evaluate_run(run_dir: str | Path | None = None, *, images: str | Path | None = None,
                 data: str | None = None, n: int = 10000, checkpoint: str | None = None,
                 features: str = "auto", inception_path: str | None = None, split: str = "test",
                 seed: int = 0, device: str = "cpu", quiet: bool = False) -> dict:
    """Generate `n` images from a run (or read a folder) and score them; returns eval.json's dict."""
    from ganforge.metrics.evaluate import evaluate_images

    if n <= 0:
        raise ConfigError(f"bad value --n {n}: must be greater than zero")
    source: dict = {}
    shape = None  # (channels, size) to read a folder reference at
    if images is not None:
        from ganforge.data import load_dataset

        if not data:
            raise ConfigError("--images needs --data NAME: the reference dataset to compare against")
        from ganforge.data.folder import list_images

        fake = load_dataset(str(images), split="all", quiet=True).images
        # `ganforge sample` writes grid.png beside the samples: it is a picture of samples, not one.
        files = list_images(Path(images).expanduser().resolve())
        grid = Path(images).expanduser().resolve() / "grid.png"
        if grid in files and len(files) == fake.shape[0] and len(files) > 1:
            keep = [i for i, f in enumerate(files) if f != grid]
            fake = fake[keep]
        source = {"images": str(images)}
    elif run_dir is not None:
        from ganforge.gan.latents import LatentSpec
        from ganforge.gan.sampling import generate, load_generator

        generator, cfg, meta = load_generator(run_dir, checkpoint, device=device, log=print)
        if not data:  # the run's own data, read the way the run read it
            data, shape = cfg.data, (cfg.channels, cfg.image_size)
        fake = generate(generator, n, LatentSpec.from_config(cfg), seed=seed, device=device,
                        pixel_range=cfg.pixel_range, progress=not quiet)
        source = {"run": str(run_dir), "checkpoint_step": meta.get("step"), "recipe": cfg.recipe,
                  "weights": "ema" if cfg.ema > 0 else "generator"}
    else:
        raise ConfigError("give a RUN_DIR or --images DIR")
    def score(images):
        return evaluate_images(images, data, features=features, split=split, seed=seed,
                               inception_path=inception_path, quiet=quiet, folder_shape=shape)

    result = score(fake)
    result.setdefault("protocol", {}).update(source)
    result["baselines"] = {"real_images": real_ceiling(data, result["protocol"], score)}
    if run_dir is not None:
        result["baselines"]["untrained_generator"] = untrained_generator(
            Path(run_dir), cfg, result["protocol"], n, seed, score)
    if run_dir is not None:  # a conditional or InfoGAN run: is its latent space what it claims?
        from ganforge.gan.latent_metrics import latent_measurements

        result.update(latent_measurements(generator, cfg, n=n, seed=seed, device=device, quiet=quiet))
    return result


def evaluate_command(args) -> int:
    from ganforge.metrics.evaluate import format_table
    from ganforge.outputs import check_file, json_with, run_record

    source = args.run_dir or args.images  # neither: evaluate_run says what to give
    out = Path(args.out) if args.out else Path(source or ".")
    if out.suffix != ".json":
        out = out / EVAL_NAME
    if source:  # never over the run's (or image folder's) own files, the data, or a JSON ganforge did not write
        inputs = [*run_record(source, own=(EVAL_NAME,)),
                  *(Path(p) for p in (args.data, args.checkpoint) if p and Path(p).exists())]
        check_file(out, inputs=inputs, ours=json_with("protocol"), force=getattr(args, "force", False))
    result = evaluate_run(args.run_dir, images=args.images, data=args.data, n=args.n,
                          checkpoint=args.checkpoint, features=args.features,
                          inception_path=args.inception_weights, split=args.split, seed=args.seed,
                          device=args.device)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, result)
    except OSError as err:
        raise GanforgeError(f"cannot write {out}: {err.strerror}; pass --out to write elsewhere") from None
    from ganforge.gan.latent_metrics import format_latent

    print("\n".join([format_table(result), *format_latent(result)]))
    print(f"wrote {out}")
    return 0


def findings(run_dir: Path) -> dict:
    """What `ganforge eval` measured of the latent space (eval.json), for the served page: class
    fidelity, and the InfoGAN codes' meaning: the categorical code's agreement with the classifier and
    its matching of code values to classes, and each continuous code's correlation with slant and
    stroke width. Empty when the run has no readable eval.json."""
    path = run_dir / EVAL_NAME
    if not path.is_file() or path.is_symlink():
        return {}
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, ValueError):
        return {}
    out: dict = {}
    fidelity = result.get("class_fidelity")
    if isinstance(fidelity, dict) and "mean" in fidelity:
        out["class_fidelity"] = {"mean": fidelity["mean"], "per_class": fidelity.get("per_class", {})}
    info = result.get("infogan") or {}
    if "categorical" in info:
        out["categorical"] = {"agreement": info["categorical"]["agreement"],
                              "matching": info["categorical"].get("matching", {})}
    if "continuous" in info:
        cont = info["continuous"]
        out["continuous"] = {"codes": cont["codes"], "slant_code": cont.get("slant_code"),
                             "width_code": cont.get("width_code")}
    return out

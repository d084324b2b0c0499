"""The ``ganforge export`` command: a run's trained model to ONNX or TorchScript."""

from __future__ import annotations

import argparse

from ganforge.errors import ConfigError
from ganforge.io import display_path


def _batch(text: str) -> int | None:
    if text == "dynamic":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch takes a positive number or dynamic, got {text}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"--batch takes a positive number or dynamic, got {text}")
    return value


def cmd_export(args: argparse.Namespace) -> int:
    from ganforge.export import export_run, read_meta

    if args.format == "torchscript" and args.out.endswith(".onnx") or \
            args.format == "onnx" and args.out.endswith((".pt", ".ts")):
        raise ConfigError(f"--out {args.out} does not fit --format {args.format}: use .onnx for onnx, .pt for "
                          "torchscript")
    out = export_run(args.run, args.out, fmt=args.format, checkpoint=args.checkpoint, batch=args.batch,
                     force=args.force, direction=args.direction)
    meta = read_meta(out)
    shapes = ", ".join(f"{i['name']} {'x'.join('N' if d is None else str(d) for d in i['shape'])} {i['dtype']}"
                       for i in meta["inputs"])
    print(f"wrote {display_path(out)} ({args.format}, {meta['task']} {meta['model']}, step {meta['step']}; "
          f"inputs: {shapes}; {out.stat().st_size / 1e6:.1f} MB)")
    return 0


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ganforge.export.write import FORMATS

    e = subparsers.add_parser("export", help="write a run's model to ONNX or TorchScript (docs/EXPORT.md)",
                              description="Export the trained model of RUN (a GAN's generator, with its EMA "
                                          "weights when kept; a detector) with what is needed to use it inside "
                                          "the file. Run it with `--model FILE` in sample, detect predict/val.")
    e.add_argument("run", metavar="RUN", help="a run folder that ganforge trained")
    e.add_argument("--out", required=True, help="the file to write (.onnx or .pt)")
    e.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (default) or torchscript")
    e.add_argument("--batch", type=_batch, default=1, metavar="N|dynamic",
                   help="the batch size the file takes (default 1), or dynamic")
    e.add_argument("--checkpoint", help="a name in RUN/checkpoints (e.g. best) or a checkpoint folder; "
                                        "default: the latest")
    e.add_argument("--direction", choices=("AtoB", "BtoA"),
                   help="a translation run's generator: AtoB (default) or BtoA (a CycleGAN run's other one)")
    e.add_argument("--force", action="store_true", help="replace a file that an earlier export wrote")
    e.set_defaults(func=cmd_export)
    return e

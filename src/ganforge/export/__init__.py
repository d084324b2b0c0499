"""Export a run's trained model (ONNX, TorchScript) and run an exported file with the same pre- and
post-processing as the run (docs/EXPORT.md)."""

from ganforge.export.read import load_exported, open_model, read_meta
from ganforge.export.write import FORMATS, export_run

__all__ = ["FORMATS", "export_run", "load_exported", "open_model", "read_meta"]

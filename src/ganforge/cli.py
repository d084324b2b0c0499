"""The `ganforge` command: a thin shell that parses arguments and calls one library function.

Every task adds its own commands (its `Task.add_commands`, found through the task registry); the
shell adds the shared `report`, runs the command, and turns bad input into one line and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from .errors import GanforgeError
from .io import display_path, first_line, os_error_advice

EPILOG = """exit codes: 0 ok, 2 bad input (one line on stderr says what to do), 3 training diverged,
130/143 stopped by SIGINT/SIGTERM after saving a checkpoint (resume with --resume)."""


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    from .export.cli import add_export_parser
    from .report import add_report_parser
    from .serve import add_serve_parser
    from .task import tasks

    p = argparse.ArgumentParser(prog="ganforge", description="Train, evaluate and sample classic GANs, and "
                                "train and use detectors.", epilog=EPILOG)
    p.add_argument("--version", action="version", version=f"ganforge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for task in tasks().values():
        task.add_commands(sub)
    # The commands that serve every task: the report, export and the served page.
    add_report_parser(sub)
    add_export_parser(sub)
    add_serve_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if extra:
        # `key=value` overrides may sit anywhere on a train command line.
        takes = getattr(args, "train_task", None) is not None or getattr(args, "takes_overrides", False)
        bad = [e for e in extra if e.startswith("-") or "=" not in e or not takes]
        if bad:
            parser.error(f"unrecognized arguments: {' '.join(bad)}")
        args.overrides = list(args.overrides) + extra
    try:
        return args.func(args)
    except GanforgeError as err:
        if _speaks(err):
            print(f"ganforge: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except KeyboardInterrupt:
        print("ganforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout left (`| head`): what it asked for was printed
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (RuntimeError, ConnectionError, EOFError) as err:
        from .data.stream import worker_died

        died = worker_died(err)  # PyTorch may raise it from anywhere in the main process
        if died is None:
            from . import distributed as dist

            lost = dist.lost_peer(err)  # a collective inside DDP failed: another process is gone
            if lost is None:
                raise
            if _speaks(lost):
                print(f"ganforge: error: {lost}", file=sys.stderr)
            return 2
        print(f"ganforge: error: {died}; {_next_step(args)}", file=sys.stderr)
        return 2
    except OSError as err:
        if os_error_advice(err):  # a path the person gave that cannot be what it is asked to be
            print(f"ganforge: error: {os_error_advice(err)}", file=sys.stderr)
            return 2
        # A full disk or a permission problem outside the checkpoint writer: still one line.
        where = f" ({display_path(err.filename)})" if getattr(err, "filename", None) else ""
        print(f"ganforge: error: {err.strerror or first_line(err)}{where}: free space or fix permissions, "
              f"then {_next_step(args)}", file=sys.stderr)
        return 2


def _speaks(err: GanforgeError) -> bool:
    """Whether this process prints `err`. Under torchrun, rank 0 speaks for the run (every rank
    meets the same bad input), unless the error is another rank's own; a lost process is named
    by `--nproc`'s launcher, so its workers do not add a line of their own."""
    from . import distributed as dist
    from .launch import LAUNCHED_BY_GANFORGE

    if isinstance(err, dist.ElsewhereError):
        return False
    if isinstance(err, dist.PeerLost) and os.environ.get(LAUNCHED_BY_GANFORGE):
        return False
    return not dist.launched() or dist.env_rank() == 0 or getattr(err, "rank_specific", False)


def _next_step(args) -> str:
    """What will work after a failure outside ganforge's control, for the command that failed."""
    from .runs.command import continue_advice

    return continue_advice(args)


if __name__ == "__main__":
    sys.exit(main())

"""Run plumbing shared by every training loop (GAN and detector alike): the run folder
(:mod:`.folder`), loop pieces (:mod:`.loop`) and checkpointed state (:mod:`.state`)."""

from ganforge.runs.folder import RunFolder, is_run_folder
from ganforge.runs.lock import RunLock
from ganforge.runs.loop import (EXIT_DIVERGED, EXIT_SIGINT, EXIT_SIGTERM, NoLog, Progress, SignalFlag,
                                TrainingDiverged, TrainingInterrupted, Window, due, finite_or_none, silent)
from ganforge.runs.state import (MAX_ROLLBACKS, RunState, continue_resumed, resume_config, rollback_or_stop, warn,
                                 with_budget)

__all__ = ["EXIT_DIVERGED", "EXIT_SIGINT", "EXIT_SIGTERM", "MAX_ROLLBACKS", "NoLog", "Progress", "RunFolder", "RunLock", "RunState", "continue_resumed", "with_budget",
           "SignalFlag", "TrainingDiverged", "TrainingInterrupted", "Window", "due", "finite_or_none", "is_run_folder",
           "resume_config", "rollback_or_stop", "silent", "warn"]

"""The skeleton every task's run shares: its config base (:mod:`.config`), recipe book
(:mod:`.recipes`), train command (:mod:`.command`), start and resume (:mod:`.start`), the run
folder (:mod:`.folder`), the loop's clock (:mod:`.clock`), loop pieces (:mod:`.loop`) and
checkpointed state (:mod:`.state`). It imports no task."""

from ganforge.runs.clock import Clock, write_summary
from ganforge.runs.command import add_train_parser
from ganforge.runs.config import RunConfig
from ganforge.runs.folder import RunFolder, is_run_folder
from ganforge.runs.lock import RunLock
from ganforge.runs.loop import (EXIT_DIVERGED, EXIT_SIGINT, EXIT_SIGTERM, NoLog, Progress, SignalFlag,
                                TrainingDiverged, TrainingInterrupted, Window, due, finite_or_none, silent)
from ganforge.runs.recipes import Recipe, RecipeBook
from ganforge.runs.state import (MAX_ROLLBACKS, RunState, continue_resumed, resume_config, rollback_or_stop, warn,
                                 with_budget)

__all__ = ["Clock", "Recipe", "RecipeBook", "RunConfig", "add_train_parser", "write_summary", "EXIT_DIVERGED", "EXIT_SIGINT", "EXIT_SIGTERM", "MAX_ROLLBACKS", "NoLog", "Progress", "RunFolder", "RunLock", "RunState", "continue_resumed", "with_budget",
           "SignalFlag", "TrainingDiverged", "TrainingInterrupted", "Window", "due", "finite_or_none", "is_run_folder",
           "resume_config", "rollback_or_stop", "silent", "warn"]

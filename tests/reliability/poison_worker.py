"""A real training worker process that dies hard on one experiment: fault 9's poison job.

``python tests/reliability/poison_worker.py`` runs ``arbor_training.worker.main()`` unchanged,
except that starting the study of the experiment named by ``ARBOR_TEST_POISON_EXPERIMENT``
ends the process at once (``os._exit``: no nak, no clean-up), as a native crash in a model
library would. Any other experiment runs normally.
"""

from __future__ import annotations

import os
from typing import Any

from arbor_training import study, worker

CRASH_EXIT_CODE = 86
POISON = os.environ["ARBOR_TEST_POISON_EXPERIMENT"]
_run_trials = study.StudyRunner.run_trials


def _crashing_run_trials(
    self: study.StudyRunner, experiment: Any, *args: Any, **kwargs: Any
) -> Any:
    if experiment.id == POISON:
        os._exit(CRASH_EXIT_CODE)
    return _run_trials(self, experiment, *args, **kwargs)


study.StudyRunner.run_trials = _crashing_run_trials  # type: ignore[method-assign]

if __name__ == "__main__":
    worker.main()

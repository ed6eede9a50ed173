"""One object per task: what a classifier, a detector and a landmark (Cobb) model each need of the shared loop,
runner and ``evaluate`` (see :mod:`spinebench.tasks.base`). The registry names each model's task::

    from spinebench.tasks import get_task
    task = get_task("cls_densenet121")          # or a model, or a task name
    ds_val = task.val_data(model, val_ds, settings, device)
"""

from __future__ import annotations

from spinebench.tasks.base import Task, TrainData
from spinebench.tasks.classification import ClassificationTask
from spinebench.tasks.cobb import CobbTask
from spinebench.tasks.detection import DetectionTask

#: every task by its registry name
TASKS: dict[str, Task] = {t.name: t for t in (ClassificationTask(), DetectionTask(), CobbTask())}


def register_task(task: Task) -> Task:
    """Make a task object known by its ``name`` (a new kind of model: one module with its Task subclass and its
    models registered with ``register_model(task=<name>)``); the loop, runner, ``evaluate`` and the predictor then
    use it without a change anywhere else."""
    TASKS[task.name] = task
    return task


def get_task(what) -> Task:
    """The task object of a task name, a registered model name, or a built model (``model.default_cfg``)."""
    from spinebench.errors import SpinebenchError

    if not isinstance(what, str):
        what = what.default_cfg["task"]
    elif what not in TASKS:
        from spinebench.models import model_info

        what = model_info(what)["task"]
    if what not in TASKS:
        raise SpinebenchError(f"no task object for task {what!r} (known: {', '.join(TASKS)})")
    return TASKS[what]


__all__ = ["TASKS", "Task", "TrainData", "get_task", "register_task"]

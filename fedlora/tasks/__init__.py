"""Tasks behind one interface (`base.Task`), registered by name: `classification`, `causal_lm`."""
from fedlora.tasks.base import Task, TaskData, get_task, task_name, tasks

__all__ = ["Task", "TaskData", "get_task", "task_name", "tasks"]

"""Tasks behind one interface (`base.Task`), registered by name: `classification`, `causal_lm`,
`lm_classification`."""
from fedlora.tasks.base import TASKS, Task, TaskData, get_task, tasks

__all__ = ["TASKS", "Task", "TaskData", "get_task", "tasks"]

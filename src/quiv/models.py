"""The public data models, at the import path quiv 0.x used (``quiv.models``).

Every name here is also importable from ``quiv`` itself. 0.x's database
models (``TaskDB`` and its helpers) were internal and have no equivalent.
"""

from ._models import Event as Event
from ._models import Job as Job
from ._models import JobStatus as JobStatus
from ._models import Task as Task
from ._models import TaskStatus as TaskStatus

__all__ = ["Event", "Job", "JobStatus", "Task", "TaskStatus"]

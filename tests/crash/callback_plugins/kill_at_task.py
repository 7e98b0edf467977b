# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kills the run's whole process group at a task boundary, or a moment into a task, for the crash-consistency
suite (tests/crash/suite.py). Off unless enabled and told where:

  CRASH_TASK_LOG=file      append "<n>\\t<task name>" for every task started (a reference run lists them)
  CRASH_KILL_AT=n          kill when task n starts ...
  CRASH_KILL_TASK=text     ... or when the first task whose name contains text starts
  CRASH_KILL_AFTER=s       ... s seconds later instead (inside that task: helm waiting, a Job running)
  CRASH_KILLED=file        where to write which task the kill hit
"""

from __future__ import annotations

import os
import signal
import threading

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: kill_at_task
type: aggregate
short_description: Kill the run's process group at a chosen task (tests only)
description: For tests/crash/suite.py; see the module docstring.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "kill_at_task"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.count = 0
        self.fired = False
        self.at = int(os.environ.get("CRASH_KILL_AT") or 0)
        self.match = os.environ.get("CRASH_KILL_TASK", "")
        self.after = float(os.environ.get("CRASH_KILL_AFTER") or 0)
        self.log = os.environ.get("CRASH_TASK_LOG")

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.count += 1
        name = task.get_name()
        if self.log:
            with open(self.log, "a", encoding="utf-8") as handle:
                handle.write(f"{self.count}\t{name}\n")
        if self.fired or not ((self.at and self.count == self.at) or (self.match and self.match in name)):
            return
        self.fired = True

        def kill():
            marker = os.environ.get("CRASH_KILLED")
            if marker:
                with open(marker, "w", encoding="utf-8") as handle:
                    handle.write(f"{self.count}\t{name}\t+{self.after:g}s\n")
            os.killpg(os.getpgrp(), signal.SIGKILL)

        if self.after:
            threading.Timer(self.after, kill).start()
        else:
            kill()

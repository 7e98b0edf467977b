#!/usr/bin/python
# Copyright: langfuse_ops.platform contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: namespace_lock
short_description: Hold the one-run-at-a-time lock of a Langfuse namespace (a coordination.k8s.io Lease)
description:
  - install.yml, upgrade.yml, backup.yml and restore.yml take this lock before they change anything, so two runs
    never change one namespace at once. A Lease C(langfuse-ops-lock) in the namespace names the holder (user, host,
    ansible-playbook pid), the playbook, the step it is at and since when.
  - While the run lives, a renewer process renews the Lease. When the run's ansible-playbook process dies, the renewer
    stops every process the run had started (helm, kubectl, module processes), marks the Lease as ended and exits.
  - A second run refuses at once, naming the holder. A stale Lease (its run ended without releasing it) is taken over
    only when O(take_over) names the namespace.
  - With O(restore_record), refuses beside an unfinished restore, naming its backups and the command that finishes it.
  - With O(suspend_backups), the namespace's backup CronJobs are suspended while the lock is held, each marked with the
    annotation C(langfuse-ops.io/suspended-by), and given back on release; a run that takes over a stale lock gives back
    those the dead run suspended too. A CronJob suspended by a person stays suspended.
  - Runs on the controller (an action plugin). Never reports a change, since the Lease is the run's own bookkeeping.
    In check mode it only reads, and refuses the same way.
version_added: 0.2.0
author: langfuse_ops.platform maintainers (@langfuse-ops)
options:
  namespace:
    description: The namespace to lock (created when missing, outside check mode and unless O(create_namespace=false)).
    type: str
    required: true
  state:
    description: C(held) takes the lock (or, for its holder, notes the step the run is at); C(released) gives it back.
    type: str
    choices: [held, released]
    default: held
  playbook:
    description: What the run is, for the messages of a run that finds the lock taken.
    type: str
    default: a run
  phase:
    description: The step the run is at.
    type: str
    default: start
  holder:
    description: The holder identity a first C(held) returned (RV(lock.holder)); given, the call is for that holder.
    type: str
    default: ""
  take_over:
    description: The namespace's name, to take over a stale lock.
    type: str
    default: ""
  lease_seconds:
    description: How long the Lease stays valid without a renewal.
    type: int
    default: 30
  suspend_backups:
    description: Suspend the namespace's backup CronJobs while the lock is held.
    type: bool
    default: false
  create_namespace:
    description: Create the namespace when it does not exist (the Lease lives in it).
    type: bool
    default: true
  restore_record:
    description:
      - The name of the restore's record (a ConfigMap). Given, a run of any O(playbook) but C(restore.yml) is refused while
        that record says a restore is unfinished, or while a Deployment carries the annotation
        C(langfuse-ops.io/restore-replicas) that a restore writes before it stops the workload.
      - With O(state=released), the backup CronJobs stay suspended while that record says a restore is unfinished.
    type: str
    default: ""
  kubeconfig:
    description: Path to the kubeconfig; the client's default (C(KUBECONFIG), C(~/.kube/config)) when omitted.
    type: raw
  context:
    description: The kubeconfig context.
    type: str
requirements:
  - kubernetes (Python), on the controller
"""

EXAMPLES = r"""
- name: Take the namespace lock
  langfuse_ops.platform.namespace_lock:
    namespace: langfuse
    playbook: upgrade.yml
    take_over: "{{ langfuse_take_over_lock | default('') }}"
    suspend_backups: true
  register: lock

- name: Give the lock back
  langfuse_ops.platform.namespace_lock:
    namespace: langfuse
    state: released
    holder: "{{ lock.lock.holder }}"
"""

RETURN = r"""
lock:
  description: The lock as this run holds it.
  returned: state=held
  type: dict
  contains:
    holder:
      description: This run's holder identity; empty when no lock was taken (check mode).
      type: str
    state:
      description: C(held), or why not.
      type: str
    suspended:
      description: The backup CronJobs suspended under this lock.
      type: list
      elements: str
    taken_over_from:
      description: The holder of the stale lock this run took over.
      type: str
resumed:
  description: The backup CronJobs given back on release.
  returned: state=released
  type: list
  elements: str
msg:
  description: What happened.
  returned: always
  type: str
"""

"""Backups: restic snapshots of everything a stack needs to be rebuilt, proven to restore.

One module per job (creation, restoration, verification, snapshots: list and prune, recovery
on a new host) over the stack's repository (repository), the restic runner (restic), its
targets (target), the snapshot's layout (layout) and its database dumps (dumps).
"""

"""Faults the search survives: the storage path, lost nodes, trials to resume or restart."""

from __future__ import annotations

import os

import storage

from cluster import node_lost


def enter_storage(storage_path: str) -> None:
    """Check the storage path every node must share, and run the driver from it.

    The driver's working dir is Ray's unpacked copy of job/. Where nodes share one session
    dir (Ray's fake multi-node clusters) another node's agent unpacks it again in place,
    and a cwd that vanished breaks Tune's relative-path handling: run from the storage
    path (or, for object storage, a directory of our own)."""
    storage.check_shared(storage_path)
    if storage.is_uri(storage_path):
        import tempfile

        os.chdir(tempfile.mkdtemp(prefix="rayscale-driver-"))
    else:
        os.chdir(storage_path)


def resume_lost(grid, restored, progress, max_failures: int):
    """Tune retries a trial whose node died only if the trial was RUNNING; one still PENDING
    there (its actor starting, or being reset for it) ends in ERROR at once. Those are
    resumed here, from their last checkpoint, within the same --max-failures budget."""
    for _ in range(max_failures):
        lost = [
            (r.metrics or {}).get("trial_id") or os.path.basename(r.path)
            for r in grid
            if r.error and node_lost(r.error)
        ]
        if not lost:
            break
        print(f"resuming {len(lost)} trial(s) lost with their node: {', '.join(lost)}", flush=True)
        for trial_id in lost:
            progress.retried[trial_id] = progress.retried.get(trial_id, 0) + 1
        grid = restored().fit()
    return grid


def storage_fault_line(a, progress) -> str:
    """The one line a storage fault ends the job with: which path, what to do next."""
    resume = f"run `rayscale job resume {a.name} -- <the same job args>`"
    head = (
        f"--storage-path {a.storage_path}: {progress.storage_fault} after {progress.done} "
        "finished trials; "
    )
    if progress.storage_fault == storage.VANISHED:
        return head + (
            "bring the volume back if it was unmounted (or pass a path nothing else "
            f"deletes) and {resume}: Tune saved its state there again at the end, so the "
            "finished trials are kept and the ones in flight start again"
        )
    return head + (
        f"make room there and {resume} on this cluster: the search goes on from Tune's last "
        "whole saved state (put back from the head's copy if the full disk cut it short); "
        "trials that finished after it run again"
    )


def restart_vanished(grid, restored):
    """A resumed search whose folder had vanished: the trials that were in flight lost their
    checkpoints with it and Tune cannot restore them. They start again from scratch."""
    gone = [r for r in grid if r.error and storage.CHECKPOINT_GONE in str(r.error)]
    if not gone:
        return grid
    print(f"starting again {len(gone)} trial(s) whose checkpoints vanished", flush=True)
    return restored(restart_errored=True).fit()

"""Actor handles that survive a restart of the actor holding them: kept as names, looked up on first use.

A handle passed to an actor's constructor is not kept across that actor's restart (ray-project/ray#53727), so a
learner actor gets the names of the actors it calls (`TrialContext.actor_name`) and looks them up where it runs.
"""

from __future__ import annotations

from typing import Any

import ray


class NamedActors:
    """`workers`: actor handles, or names in `namespace` looked up on first use (and again wherever this object is
    unpickled)."""

    def __init__(self, workers: list[Any], namespace: str | None = None):
        self._workers, self._namespace = list(workers), namespace
        self._handles: list[Any] | None = None

    @property
    def workers(self) -> list[Any]:
        if self._handles is None:
            self._handles = [
                ray.get_actor(w, namespace=self._namespace) if isinstance(w, str) else w for w in self._workers
            ]
        return self._handles

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_handles": None}

"""Thin Ray roles around the plain classes of `workloads/`.

Each role is a plain class with a few public methods (usable and testable without Ray);
`ray.remote(...)` is applied where the trial places it, with the resources of its bundle.
"""

"""One package per family: its registry entry (`FAMILY` in `__init__.py`), its driver and the rest of its
orchestration (sweep-end summary, report table, benchmarks, extra commands). See docs/adding-a-family.md."""

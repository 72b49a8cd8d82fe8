"""A plugin module that fails while it is imported (with no entry point: tests name it directly)."""

raise RuntimeError("this plugin is broken")

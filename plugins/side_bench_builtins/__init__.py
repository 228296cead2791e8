"""The built-in plugins of side-bench. Each module is registered through the entry-point
group ``side_bench`` exactly like a third-party plugin; the core imports none of them."""

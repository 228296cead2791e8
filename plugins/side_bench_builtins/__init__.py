"""The built-in plugins of side-bench, one module each, registered exactly like third-party
plugins; the core imports none of them by name.

One entry point of the group ``side_bench`` (``builtins``, in pyproject.toml) names this
package, and ``BUILTIN_MODULES`` lists its plugin modules (as pytest's ``default_plugins`` and
llm's ``DEFAULT_PLUGINS`` do): the registry loads each as the plugin ``builtin-<module>``
(underscores as hyphens), so ``side-bench plugins`` lists each and ``SIDE_BENCH_PLUGINS``
can name each, as when each had its own entry point. A new built-in module is one line here,
with no reinstall. Importing this package imports nothing else (the registry reads the list
before it loads any plugin).
"""

BUILTIN_MODULES = (
    "canary_metrics",
    "conditions",
    "datasets",
    "diffusers_model",
    "divergence_metric",
    "executors",
    "extractors",
    "features",
    "finextract",
    "image_datasets",
    "image_features",
    "membership_metrics",
    "metrics",
    "models",
    "rankers",
    "ranking_metrics",
    "suites",
)

"""plm-bench's built-in plugins, registered through the ``plm_bench`` entry points like any
third-party plugin (installed under the import name ``plm_bench_plugins``)."""

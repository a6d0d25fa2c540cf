"""The `wmss <subcommand>` entry points, one module per subcommand (`main(argv) -> int`), dispatched by
megatron_wmss/cli.py. Commands parse options and call library functions; no library module imports
one, and a command that needs another subcommand runs it as a process or through `megatron_wmss.cli.main`
(tests/test_import_graph.py checks both)."""

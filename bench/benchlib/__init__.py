"""The pieces of bench/run (bench/README.md), shared with bench/ab."""

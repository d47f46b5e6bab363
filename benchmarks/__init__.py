"""quiv's benchmark suite (issue #3) and soak harness (issue #4).

``python -m benchmarks`` (``make bench``) runs workloads W1-W7, each against a
ceiling measured in the same run with the raw mechanism quiv is built on, then
prints a table and writes ``benchmarks/results/latest.json``. ``--soak`` adds
W8 (a million short jobs); ``--quick`` shrinks every workload for a CI smoke
run; ``--only W1,W4`` picks workloads.

``python -m benchmarks.soak`` (``make soak``) runs a mixed workload for
minutes and checks that memory, threads, descriptors and history stay flat.
"""

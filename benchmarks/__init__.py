"""quiv's benchmark suite (issue #3) and soak harness (issue #4).

``python -m benchmarks`` (``make bench``) runs workloads W1-W7 and W9-W12, each
against a ceiling measured in the same run with the raw mechanism quiv is built
on, then prints a table and writes ``benchmarks/results/latest.json``. ``--soak``
adds W8 (a million short jobs); ``--quick`` shrinks every workload; ``--only
W1,W4`` picks workloads; ``--peers apscheduler`` (``make bench
PEERS=apscheduler``) adds APScheduler 3.11's figures for the same workloads
(issue #9).

``python -m benchmarks.soak`` (``make soak``) runs a mixed workload for
minutes and checks that memory, threads, descriptors and history stay flat.
"""

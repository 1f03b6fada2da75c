"""Where a process runs: device, threads shared with other processes, seeds, process groups.

``process``: device and thread set-up and seeding of a run; ``cpu_share``: how many threads to use
while other processes share the machine; ``distributed``: thin helpers over ``torch.distributed``.
"""

"""What running the pipeline on many processes and machines takes: the processes of one run (their barriers,
their heartbeats, a lost machine named) and the cost of the paper's setting (GPU-hours and disk per stage)."""

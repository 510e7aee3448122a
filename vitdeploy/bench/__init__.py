"""Latency/throughput measurement, its versioned JSON records, regression gates and plots.

`runner` times a backend's step function; `stats` summarises the samples;
`schema` owns the JSON layout every other part (compare, report) reads.
"""

"""`trading-helper bench soak`: a simulated market week through the real path, with faults."""

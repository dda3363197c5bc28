"""The control plane's pure core: decisions from events, with time passed in. No I/O, no sleeps."""

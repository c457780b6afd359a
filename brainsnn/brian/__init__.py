"""Everything that builds or runs Brian2 objects: devices, Poisson encoding, STDP rules, the
winner-take-all STDP network, and export of torch networks to Brian2."""

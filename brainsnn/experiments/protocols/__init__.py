"""The protocols an installed brainsnn runs; each module has a ``main(argv)``."""

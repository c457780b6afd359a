"""What every protocol shares (options, scales, paths, the run and its results file), and
the protocols themselves (``brainsnn run NAME``)."""

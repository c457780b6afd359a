"""What is computed from a trained network or a results file: energy, figures."""

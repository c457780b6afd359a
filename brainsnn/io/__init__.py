"""Reading datasets and reading/writing results files (HDF5)."""

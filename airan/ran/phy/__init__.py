"""L1 signal-processing kernels, written once for NumPy and CuPy (3GPP TS 38.211/38.212)."""

"""The simulated O-RAN DU: numerology, L2 MAC, FAPI over ZMQ, and L1 kernels (``phy``)."""

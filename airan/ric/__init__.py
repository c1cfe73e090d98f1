"""Interfaces toward the RIC: E2-style agent and xApp SDK, O1-style management, security.

Import the submodules (``airan.ric.security``, ``airan.ric.server``, ``airan.ric.o1``);
this package imports nothing itself, so importing it never pulls in gRPC.
"""

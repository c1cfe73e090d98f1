from setuptools import setup

setup(cffi_modules=["native/edfq_build.py:ffibuilder"])

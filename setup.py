__import__("setuptools").setup(cffi_modules=["native/edfq_build.py:ffibuilder"])

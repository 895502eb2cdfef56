from setuptools import setup

# The only job of this file: build the C core through cffi (routechain/_build.py).
setup(cffi_modules=["routechain/_build.py:ffibuilder"])

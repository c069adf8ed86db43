# lit configuration for partir's golden filecheck tests (run from tests/test_filecheck.py).
import os
import sys

import lit.formats

config.name = "partir"
config.test_format = lit.formats.ShTest(False)
config.suffixes = [".mlir"]
config.test_source_root = os.path.dirname(__file__)
config.excludes = ["lit.cfg.py"]
# xdsl-opt and filecheck come from the same environment as the running interpreter.
config.environment["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
# lit starts each RUN line with a clean environment: keep PYTHONPATH, so a mutant copy of the
# package (tests/mutation/run.py) is the one the tools import, not the installed checkout.
if "PYTHONPATH" in os.environ:
    config.environment["PYTHONPATH"] = os.environ["PYTHONPATH"]

"""Build the compiled core: Cython over the small C in csrc/.

CHUNKWIRE_DEBUG_BUILD=1 builds csrc/ and the Cython module with -O0 -g and
AddressSanitizer (gcc/clang only); run Python with the ASan runtime preloaded,
as the README's development section shows.
CHUNKWIRE_NO_EXTENSIONS=1 at build time skips the extension entirely.
"""

import os
import sys

from setuptools import Extension, setup

NO_EXTENSIONS = os.environ.get("CHUNKWIRE_NO_EXTENSIONS", "") not in ("", "0")
DEBUG = os.environ.get("CHUNKWIRE_DEBUG_BUILD", "") not in ("", "0")

compile_args: list[str] = []
link_args: list[str] = []
if sys.platform != "win32":
    compile_args += ["-std=c99", "-Wall"]
    if DEBUG:
        sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
        compile_args += ["-O0", "-g", "-UNDEBUG", *sanitize]
        link_args += sanitize
    else:
        compile_args += ["-O3"]

ext_modules = []
if not NO_EXTENSIONS:
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [
            Extension(
                "chunkwire._core_c",
                sources=[
                    "src/chunkwire/_core_c.pyx",
                    "csrc/ring.c",
                    "csrc/frame.c",
                    "csrc/batch.c",
                    "csrc/shring.c",
                ],
                include_dirs=["csrc"],
                extra_compile_args=compile_args,
                extra_link_args=link_args,
            )
        ],
        compiler_directives={"language_level": "3", "embedsignature": True},
        gdb_debug=DEBUG,
        force=DEBUG,
    )

setup(ext_modules=ext_modules)

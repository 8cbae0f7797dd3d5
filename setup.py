"""Packaging (metadata in setup.cfg). The one addition: the files minicct's commands use by default, which live
outside the package in a checkout, are copied into the installed package as minicct/_data/<same path>:

    data/checkpoints/*.npz      the committed classroom checkpoints (snp, replicate, lessons)
    data/samples/*.npz          small committed data files (data/*.npz are download caches: never shipped)
    lessons/exercises/*         the exercise files and their README (python -m minicct.exercises)

minicct.resources looks in the checkout first, then in minicct/_data (see docs/workflows.md).
"""
import glob
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("data/checkpoints/*.npz", "data/samples/*.npz", "lessons/exercises/*.py", "lessons/exercises/*.md")


class build_py_with_data(build_py):
    """build_py, then copy the SHIPPED files to <build>/minicct/_data/<their path in the checkout>."""

    def run(self):
        super().run()
        here = os.path.dirname(os.path.abspath(__file__))
        for pattern in SHIPPED:
            for src in sorted(glob.glob(os.path.join(here, pattern))):
                rel = os.path.relpath(src, here)
                dst = os.path.join(self.build_lib, "minicct", "_data", rel)
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(src, dst)


setup(cmdclass={"build_py": build_py_with_data})

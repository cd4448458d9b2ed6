"""Package discovery for setuptools (the metadata is in pyproject.toml).

The import package ``tokensift`` is assembled from five source folders: ``tokensift/`` itself and
``sw/``, ``quant/``, ``hw/``, ``sim/`` mapped to ``tokensift.sw`` and so on. pyproject.toml's
``packages.find`` cannot prefix what it finds in a mapped folder, so the packages are found here, by
walking each folder for ``__init__.py``: a new subpackage ships without being listed anywhere.
"""

from setuptools import find_packages, setup

#: import name -> source folder
PACKAGE_DIRS = {
    "tokensift": "tokensift",
    "tokensift.sw": "sw",
    "tokensift.quant": "quant",
    "tokensift.hw": "hw",
    "tokensift.sim": "sim",
}


def discover() -> list[str]:
    packages = []
    for name, folder in PACKAGE_DIRS.items():
        packages.append(name)
        packages += [f"{name}.{sub}" for sub in find_packages(where=folder)]
    return sorted(packages)


if __name__ == "__main__":
    setup(packages=discover(), package_dir=PACKAGE_DIRS)

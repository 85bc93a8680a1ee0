"""Print the app's dependencies from pyproject.toml, one per line, except Flower itself.

docker/Dockerfile installs these on top of ``flwr/superexec`` (which pins Flower): torch and
torchvision (``--torch``) from ``TORCH_INDEX`` alone, the rest (``--no-torch``) from PyPI. With
PyPI as an *extra* index, pip would take PyPI's newer torch over the CUDA index's build.
scripts/build-standin-images.sh downloads the wheels of all of them for the offline CI build.

    python docker/requirements.py [--torch | --no-torch] [pyproject.toml] > requirements.txt
"""

import re
import sys

import tomllib

TORCH = {"torch", "torchvision"}
args = sys.argv[1:]
mode = args.pop(0) if args and args[0] in ("--torch", "--no-torch") else "all"
path = args[0] if args else "pyproject.toml"
with open(path, "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
names = {d: re.split(r"[\s<>=!~\[;]", d, maxsplit=1)[0].lower() for d in deps}
keep = {
    "all": lambda n: n != "flwr",
    "--torch": lambda n: n in TORCH,
    "--no-torch": lambda n: n != "flwr" and n not in TORCH,
}[mode]
print("\n".join(d for d in deps if keep(names[d])))

"""Print the app's dependencies from pyproject.toml, one per line, except Flower itself.

docker/Dockerfile installs these on top of ``flwr/superexec`` (which pins Flower);
scripts/build-standin-images.sh downloads their wheels for the offline CI build.

    python docker/requirements.py [pyproject.toml] > requirements.txt
"""

import re
import sys

import tomllib

path = sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml"
with open(path, "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
print("\n".join(d for d in deps if re.split(r"[\s<>=!~\[;]", d, maxsplit=1)[0] != "flwr"))

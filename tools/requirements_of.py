"""Print an installed distribution's requirements (no extras), one per line, leaving out named packages.

The Dockerfile installs vLLM with --no-deps (its metadata pins a torch that NGC's own build does not
satisfy) and then its other requirements from this list, under a constraint file frozen from the image:

    python tools/requirements_of.py vllm --skip torch torchvision torchaudio xformers triton
"""

from __future__ import annotations

import argparse
import re
from importlib.metadata import requires


def requirement_name(requirement: str) -> str:
    """'torch==2.7.0; platform_system == "Linux"' -> 'torch' (normalized: lower case, '-' for '_' and '.')."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements_without(distribution: str, skip: set[str]) -> list[str]:
    """The base requirements of `distribution` (those under an `extra ==` marker left out), minus `skip`."""
    skip = {requirement_name(name) for name in skip}
    return [r for r in requires(distribution) or [] if "extra ==" not in r and requirement_name(r) not in skip]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("distribution")
    parser.add_argument("--skip", nargs="*", default=[], help="package names to leave out")
    args = parser.parse_args(argv)
    print("\n".join(requirements_without(args.distribution, set(args.skip))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Load a built simda_kernels._C from a build folder and check what it exports.

Usage: python scripts/check_extension.py BUILD_DIR  (the folder holding simda_kernels/_C*.so)
Loading needs no GPU: this proves the extension links against the installed torch.
"""

import glob
import importlib.util
import sys

import torch  # noqa: F401  (loads libtorch before the extension)

from simda_kernels.temporal_adapter import arch_names

EXPECTED = ("temporal_adapter_forward", "temporal_adapter_backward", "archs")


def main(build_dir: str) -> int:
    found = glob.glob(f"{build_dir}/simda_kernels/_C*.so")
    if not found:
        print(f"no simda_kernels/_C*.so under {build_dir}", file=sys.stderr)
        return 1
    spec = importlib.util.spec_from_file_location("simda_kernels._C", found[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    missing = [name for name in EXPECTED if not hasattr(module, name)]
    if missing:
        print(f"{found[0]} lacks {missing}", file=sys.stderr)
        return 1
    archs = arch_names(module.archs()) or "?"
    print(f"CUDA extension OK: {found[0]} exports {', '.join(EXPECTED)}, built for {archs}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

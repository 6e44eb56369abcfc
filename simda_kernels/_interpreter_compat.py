"""Keep the Triton interpreter (``TRITON_INTERPRET=1``) usable across the supported triton
versions.

The interpreter holds every scalar as a one-element numpy array. triton 3.6 converts such a
scalar to a Python int with ``int(array)``, which numpy >= 2.4 refuses for arrays of rank 1, so
any loop over a runtime bound (``for start in range(0, n, BLOCK)``) fails with "only
0-dimensional arrays can be converted to Python scalars". Later triton versions squeeze the
array first; :func:`patch` makes older ones do the same. It only touches the interpreter, and
only while it runs a kernel (triton applies and undoes its own patches around each launch).
"""

from __future__ import annotations


def _index(self) -> int:
    return int(self.handle.data.reshape(-1)[0])


def patch() -> bool:
    """Wrap the interpreter's tensor patching so ``tensor.__index__`` accepts rank-1 scalars.
    Returns whether the wrapper is installed (False where the interpreter has no such hook)."""
    try:
        from triton.runtime import interpreter
    except ImportError:
        return False
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None:
        return False
    if getattr(original, "simda_compat", False):
        return True

    def _patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", _index)

    _patch_lang_tensor.simda_compat = True
    interpreter._patch_lang_tensor = _patch_lang_tensor
    return True

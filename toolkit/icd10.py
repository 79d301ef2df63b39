"""The ICD-10-CM code table medkit pins: which codes are billable, in which release (ground: no torch).

The facts come from `simple-icd-10-cm` (CMS data, offline). A billable code is a leaf of the hierarchy
that is a category or subcategory (e.g. J45.909, A09), written here in dotted form. Scoring helpers
(category, chapter, code extraction from text) stay with the metrics in medkit.eval.metrics.
"""

from __future__ import annotations

import re
from functools import lru_cache

from medkit.errors import MedkitError

PACKAGE = "simple-icd-10-cm"
_SHAPE = re.compile(r"^[A-Z][0-9A-Z][0-9A-Z](\.?[0-9A-Z]{1,4})?$")  # QA0.0101 (2025) too


def _cm():
    try:
        import simple_icd_10_cm as cm
    except ImportError:
        raise MedkitError(
            f"the ICD-10-CM code table needs the '{PACKAGE}' package",
            hint="pip install 'medkit[eval]' (or pip install simple-icd-10-cm)",
        ) from None
    return cm


def release() -> str:
    """The pinned code table's release, e.g. 'simple-icd-10-cm 1.5.0' (read without importing it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{PACKAGE} {version(PACKAGE)}"
    except PackageNotFoundError:
        _cm()  # raises the one-line install hint
        raise


def undotted(code: str) -> str:
    """Upper case, no dot, no whitespace: ' j45.909 ' -> 'J45909'."""
    return re.sub(r"[\s.]", "", code).upper()


def dotted(code: str) -> str:
    """The dotted form of a code: 'J45909' -> 'J45.909', 'A09' -> 'A09'."""
    plain = undotted(code)
    return plain if len(plain) <= 3 else f"{plain[:3]}.{plain[3:]}"


@lru_cache(maxsize=1)
def billable_codes() -> tuple[str, ...]:
    """Every billable code of the pinned release, dotted and sorted: the categories and subcategories
    without children. A child's code extends its parent's (J45 -> J45.9 -> J45.909), so in sorted order a
    code has children exactly when the next code starts with it (the same set as simple-icd-10-cm's
    is_leaf + is_category_or_subcategory, in a fifth of the time; a test compares the two)."""
    cm = _cm()
    codes = sorted(c for c in cm.get_all_codes(False) if _SHAPE.match(c) and "." not in c)
    return tuple(
        dotted(c) for c, after in zip(codes, [*codes[1:], ""], strict=True) if not after.startswith(c)
    )


@lru_cache(maxsize=1)
def _billable_set() -> frozenset[str]:
    return frozenset(undotted(c) for c in billable_codes())


def is_billable(code: str) -> bool:
    """Whether ``code`` (dotted or not, any case) is a billable code of the pinned release."""
    plain = undotted(code) if isinstance(code, str) else ""
    return bool(_SHAPE.match(plain)) and plain in _billable_set()


def nearest_codes(code: str, n: int = 3) -> list[str]:
    """Up to ``n`` billable codes sharing the longest prefix with ``code`` (hints for a wrong label)."""
    plain = undotted(code) if isinstance(code, str) else ""
    codes = billable_codes()
    for k in range(min(len(plain), 7), 0, -1):
        found = [c for c in codes if undotted(c).startswith(plain[:k])]
        if found:
            return found[:n]
    return []

"""Moved to :mod:`vaeaug.pregenerate` (the writer) and :mod:`vaeaug.data.generated` (the format)."""

from .data.generated import FORMAT, FORMAT_VERSION, META_DTYPE, read_manifest, verify_generated  # noqa: F401
from .pregeneration import pregenerate  # noqa: F401

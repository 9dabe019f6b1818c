"""Pre-generated sets on disk: one format, its writer (:func:`vaeaug.pregenerate`), reader and verification."""

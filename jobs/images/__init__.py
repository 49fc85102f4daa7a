"""Images: a safe Pillow pipeline (decode with limits, operations, encode) for the ``image`` kind."""

"""File -> model input: images, text passages, audio windows. Every failure is a ``DecodeError``."""

"""The data before any backbone: finding images and splitting them, checking them, decoding, phantoms, downloads."""

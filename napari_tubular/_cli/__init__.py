"""One module per CLI command; see ``napari_tubular.cli``."""

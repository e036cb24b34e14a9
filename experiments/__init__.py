"""Research experiments kept as reproducible scripts; not part of the product's packages."""

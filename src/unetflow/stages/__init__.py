"""The pipeline's stages, one module per Snakemake rule; stages never import each other and talk only through files."""

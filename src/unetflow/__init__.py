"""unetflow: U-Net segmentation of EM volumes, from TIFF stacks to CSV reports."""

__version__ = "0.1.0"

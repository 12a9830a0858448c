"""Image-to-Video: turn one still image and a prompt into a short video with I2VGen-XL."""

__version__ = "0.1.0"

"""Image-to-Video: start the web UI (`python main.py --help` lists the options)."""

import sys

from image_to_video.cli import main

if __name__ == "__main__":
    sys.exit(main())

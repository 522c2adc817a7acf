"""Entry point for local use and Hugging Face Spaces.

Until the Gradio demo lands (it will be built in `demo/` and launched from here), this forwards to the
`kptllm` command line, e.g. `python app.py predict --model DIR --image IMG --keypoints "nose"`.
"""

import sys

from kptllm.cli import main

if __name__ == "__main__":
    sys.exit(main())

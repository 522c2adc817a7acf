"""The Gradio demo and benchmark dashboard (one module per tab). Nothing imports `demo`.

Warnings a visitor or an operator cannot act on stay out of the server log (set here, before the modules
that raise them are imported): supervision's note that it draws without OpenCV (it has a NumPy fallback,
which is all we use), pandas 3 deprecations inside Gradio's own queue, and PIL's decompression-bomb warning
when it reads the header of an image over 80 Mpx (the demo refuses anything over 40 Mpx itself, in one log line).
"""

import warnings

from PIL import Image

warnings.filterwarnings("ignore", message=r"OpenCV \(`opencv-python`\) is not installed", category=UserWarning)
warnings.filterwarnings("ignore", message=r".*(no_silent_downcasting|The copy keyword is deprecated)", module=r"gradio\.")
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

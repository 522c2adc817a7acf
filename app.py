"""Entry point for local use and Hugging Face Spaces: the Gradio demo (see demo/app.py).

    python app.py [--model PATH_OR_ID] [--host H] [--port P] [--share]

The command line of the library is `kptllm` (`python -m kptllm`).
"""

from demo.app import main

if __name__ == "__main__":
    main()

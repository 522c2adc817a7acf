"""Entry point for local use and Hugging Face Spaces: the Gradio demo (see demo/app.py).

    python app.py [--model PATH_OR_ID] [--host H] [--port P] [--share]

The command line is `kptllm` (predict, eval, compare, results, train, synth, convert, ...); `python -m kptllm`
runs the library's own subset (tiny, convert, predict) without the evaluation package.
"""

from demo.app import main

if __name__ == "__main__":
    main()

"""The Gradio demo and benchmark dashboard (one module per tab). Nothing imports `demo`."""

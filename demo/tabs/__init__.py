"""One module per tab: layout and handlers only (drawing, export and model calls are shared in demo/)."""

"""Self-contained HTML reports and their quicklooks; torch-free."""

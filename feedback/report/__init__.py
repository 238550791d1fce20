"""The cycle report: what one improvement cycle did and found, as one self-contained HTML file and its JSON.

`write_cycle_report(ws, summary, cycle_dir)` gathers the data (`data.py`) and renders it (`render.py`).
"""

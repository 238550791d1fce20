"""One embedder port for images and box crops, with the deployed detector's own features and CLIP as adapters.

Review selection, failure mining and synthesis filters all read vectors through it.
"""

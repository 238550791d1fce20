"""The cloud generators: Vertex AI image models (Gemini, Imagen) behind the generator port, paid per image.

`client` holds the google-genai client and every paid call's guard (cache, cost cap, retries); one module per model.
"""

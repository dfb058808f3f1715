"""hubexport: publish image models as reusable SavedModels, and check them.

The package imports nothing heavy; the modules that need TensorFlow import it
when they run.
"""

__version__ = "0.1.0"

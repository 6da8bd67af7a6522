"""TaoSR1 relevance toolkit: datasets and annotation for reasoning relevance judges.

Importing this package is cheap: torch, vllm, faiss and argilla load only when a
stage that needs them runs.
"""

__version__ = "0.2.0"

from toolkit.core.errors import UserError  # noqa: E402
from toolkit.core.grades import GradeScale, get_scale  # noqa: E402

__all__ = ["__version__", "UserError", "GradeScale", "get_scale"]

"""A thin typed Python client for Arbor's four gRPC services.

>>> from arbor_client import ArborClient
>>> with ArborClient() as arbor:                      # addresses from ARBOR_<SVC>_ADDRESS
...     split = arbor.create_split_from_file("credit.parquet", target="Status")
...     exp = arbor.training.create_experiment(split.name, n_trials=10)
...     for update in arbor.watch_experiment(exp.name):
...         print(update.experiment.trials_completed)
...     arbor.predict_rows("credit", [{"Age": 30, "Income": 120}])

Every failure is an ``ArborClientError`` with the status code, ErrorInfo reason and field
violations.
"""

from arbor_client._transport import DEFAULT_ADDRESSES, ClientConfig, RetryPolicy
from arbor_client.client import ArborClient
from arbor_client.errors import (
    ArborClientError,
    FieldViolation,
    PreconditionViolation,
    from_rpc_error,
)
from arbor_client.inference import InferenceClient
from arbor_client.registry import RegistryClient, model_version_name, parse_selector
from arbor_client.rows import predictions_to_rows, read_table, rows_to_inline
from arbor_client.split import SplitClient
from arbor_client.training import TERMINAL_STATES, TrainingClient, build_experiment

__all__ = [
    "DEFAULT_ADDRESSES",
    "TERMINAL_STATES",
    "ArborClient",
    "ArborClientError",
    "ClientConfig",
    "FieldViolation",
    "InferenceClient",
    "PreconditionViolation",
    "RegistryClient",
    "RetryPolicy",
    "SplitClient",
    "TrainingClient",
    "build_experiment",
    "from_rpc_error",
    "model_version_name",
    "parse_selector",
    "predictions_to_rows",
    "read_table",
    "rows_to_inline",
]

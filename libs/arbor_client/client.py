"""ArborClient: the four service clients behind one object, configured once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from arbor.inference.v1 import inference_service_pb2
from arbor.split.v1 import split_service_pb2
from arbor.training.v1 import training_service_pb2
from arbor_client._transport import SERVICES, ClientConfig
from arbor_client.inference import InferenceClient
from arbor_client.registry import RegistryClient, Selector
from arbor_client.split import SplitClient
from arbor_client.training import TrainingClient

__all__ = ["ArborClient"]


class ArborClient:
    """``client.split``, ``client.training``, ``client.registry``, ``client.inference``.

    Channels open lazily, on first use of each service, so a script that only predicts never
    dials the split service. Use as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        config: ClientConfig | None = None,
        *,
        split_address: str | None = None,
        training_address: str | None = None,
        registry_address: str | None = None,
        inference_address: str | None = None,
        token: str | None = None,
        timeout: float | None = None,
    ) -> None:
        addresses = {
            "split": split_address,
            "training": training_address,
            "registry": registry_address,
            "inference": inference_address,
        }
        if config is None:
            config = ClientConfig.from_env(addresses=addresses, token=token, timeout=timeout)
        self.config = config
        self._clients: dict[str, Any] = {}

    @classmethod
    def from_env(cls, **overrides: Any) -> ArborClient:
        """Addresses, token and timeout from ``ARBOR_*`` variables (see ClientConfig)."""
        return cls(**overrides)

    def _get(self, service: str, factory: type) -> Any:
        client = self._clients.get(service)
        if client is None:
            client = factory(config=self.config)
            self._clients[service] = client
        return client

    @property
    def split(self) -> SplitClient:
        return self._get("split", SplitClient)  # type: ignore[no-any-return]

    @property
    def training(self) -> TrainingClient:
        return self._get("training", TrainingClient)  # type: ignore[no-any-return]

    @property
    def registry(self) -> RegistryClient:
        return self._get("registry", RegistryClient)  # type: ignore[no-any-return]

    @property
    def inference(self) -> InferenceClient:
        return self._get("inference", InferenceClient)  # type: ignore[no-any-return]

    def service(self, name: str) -> Any:
        """The client for ``name`` (split, training, registry, inference)."""
        if name not in SERVICES:
            raise KeyError(name)
        return getattr(self, name)

    # shortcuts for the common paths --------------------------------------------------------
    def create_split_from_file(
        self, path: str | Path, target: str, **options: Any
    ) -> split_service_pb2.Split:
        """See ``SplitClient.create_split_from_file``."""
        return self.split.create_split_from_file(path, target, **options)

    def predict_rows(
        self, selector: Selector, rows: Iterable[Mapping[str, Any]], **options: Any
    ) -> inference_service_pb2.PredictResponse:
        """See ``InferenceClient.predict_rows``."""
        return self.inference.predict_rows(selector, rows, **options)

    def watch_experiment(
        self, name: str, **options: Any
    ) -> Iterator[training_service_pb2.WatchExperimentResponse]:
        """See ``TrainingClient.watch_experiment``."""
        return self.training.watch_experiment(name, **options)

    def health(self, timeout: float = 2.0) -> dict[str, str]:
        """Each service's gRPC health status (``UNAVAILABLE`` when it does not answer)."""
        return {name: self.service(name).health(timeout) for name in SERVICES}

    # lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> ArborClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

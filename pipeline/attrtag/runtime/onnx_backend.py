"""ONNX Runtime backend: an exported attrtag model, torch-free.

:class:`OnnxModel` picks execution providers (TensorRT -> CUDA -> CPU by default), then reads
back the providers the session really uses: ``onnxruntime-gpu`` lists the GPU providers even on
a machine without a GPU or CUDA libraries, and a session asked for them silently falls back to
the CPU. An explicit ``device="cuda"``/``"tensorrt"`` that ends up on the CPU is an error. CUDA,
cuDNN and TensorRT from pip packages are loaded first (see ``gpu_libraries``).

Nothing here may import torch (the tagging path runs on machines without it); a test runs this
module with torch blocked.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..card import ModelCard
from ..errors import AttrtagError, CheckpointError, DeviceUnavailableError, first_line
from ..schema import Schema
from .api import Placement, check_batch, empty_output, parse_device
from .gpu_libraries import cuda_device_count, missing_cuda_hint, preload_cuda, tensorrt_loadable
from .held_output import hold_output
from .ort_cache import CachedGraph, lookup_graph
from .temperature import apply_temperatures
from .onnx_file import OnnxFormatError, read_metadata_and_outputs

if TYPE_CHECKING:  # only for annotations: neither is needed to import this module
    import onnx
    import onnxruntime

_logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
_DEVICE_OF = {TENSORRT: "tensorrt", CUDA: "cuda"}  # the placement of a session's first provider
DEFAULT_TRT_CACHE = Path("~/.cache/attrtag/trt")
_PIP_HINT = "pip install onnxruntime-gpu==1.31.1  (or onnxruntime for CPU only)"
#: The graph input of every attrtag export: float32 ``[batch, 3, H, W]``.
INPUT_NAME = "image"


class OnnxModel:
    """An attrtag ``.onnx`` file loaded in ONNX Runtime.

    Args:
        path: the exported model.
        device: ``auto`` (TensorRT -> CUDA -> CPU, whichever work here), ``cpu``, ``cuda``
            (``cuda:N``) or ``tensorrt`` (``tensorrt:N``).
        providers: explicit ONNX Runtime provider list; overrides ``device``'s choice.
        trt_cache_dir: TensorRT engine/timing cache folder (default ``~/.cache/attrtag/trt``);
            engines take minutes to build, the cache makes later starts fast.
        threads: intra-op CPU threads (default: ONNX Runtime's, one per physical core).
        batch_size_hint: usual batch size; TensorRT gets an optimisation profile for batches
            1..hint, and larger batches are run in chunks of it.
        trt_fp16: let TensorRT build float16 kernels (default: when the model is fp16).
        calibrated: apply the card's per-group temperatures (False: the raw probabilities).

    Raises:
        CheckpointError: missing file or not an attrtag model.
        DeviceUnavailableError: ``device`` is ``cuda``/``tensorrt`` but the session runs
            without that provider.

    Attributes:
        card: the model card read from the file's metadata.
        schema: groups and values (``card.schema``).
        preprocessing: how to build the input rows (``card.preprocessing``).
        rules: embedded class rules or ``None``.
        placement: where it really runs (read back from the session).
        temperatures: ``{group: T}`` applied to the outputs (empty: raw probabilities).
        providers: the providers the session really uses, best first.
        input_name: the graph input (``image``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: str = "auto",
        providers: list[str] | None = None,
        trt_cache_dir: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        batch_size_hint: int | None = None,
        trt_fp16: bool | None = None,
        calibrated: bool = True,
    ) -> None:
        ort = _import_onnxruntime()
        self.path = Path(path)
        self.card: ModelCard = read_onnx_card(self.path)
        self.schema = self.card.schema
        self.preprocessing = self.card.preprocessing
        self.rules = self.card.rules
        self.temperatures: dict[str, float] = self.card.group_temperatures if calibrated else {}
        self.batch_size_hint = int(batch_size_hint) if batch_size_hint else None
        if self.batch_size_hint is not None and self.batch_size_hint < 1:
            raise AttrtagError(f"`batch_size` must be at least 1, got {batch_size_hint}")

        base, device_id = parse_device(device)
        cache_dir = Path(trt_cache_dir or DEFAULT_TRT_CACHE).expanduser()
        requested = self._requested(ort, providers, base, device_id, trt_fp16, cache_dir)
        names = [p if isinstance(p, str) else p[0] for p in requested]
        cpu_only = names == [CPU]
        if CUDA in names or TENSORRT in names:
            preload_cuda(ort)  # CUDA/cuDNN from pip packages: the providers name them by soname only
        if TENSORRT in names:
            tensorrt_loadable()  # loads TensorRT from its pip package, where it is one
        cached = lookup_graph(self.path, ort.__version__) if cpu_only else None
        #: Whether the session loaded the optimised graph an earlier run saved (see ort_cache).
        self.graph_from_cache = False
        # A GPU provider that fails to load says why in ONNX Runtime's own lines (C++ logs on
        # stderr, an "EP Error ... Falling back" block print()ed on stdout, which may carry
        # tagging output): held back until we know whether our own line replaces them.
        with hold_output(_logger, "ONNX Runtime") as held:
            self.session = self._create_session(ort, requested, threads, cached)
        self._read_back(device_id)
        warned = True  # a refusal says it in one line, as a warning does
        try:
            warned = self._check_device(base, device)
        finally:
            held.release(show=not warned)
        self._use_io_binding = self.placement.on_gpu
        _logger.info(
            "ONNX Runtime runs %s on %s (precision %s%s)",
            self.path.name, " -> ".join(self.providers), self.card.precision,
            ", optimised graph from the cache" if self.graph_from_cache else "",
        )
        if self.placement.device == "tensorrt":
            _logger.info("TensorRT engine cache: %s (the first run builds the engine: minutes)", cache_dir)

    def _read_back(self, device_id: int) -> None:
        """What really runs it, not what was asked for; the graph's input and output names."""
        self.providers: list[str] = list(self.session.get_providers())
        on = _DEVICE_OF.get(self.providers[0], "cpu")
        self.placement = Placement("onnxruntime", on, device_id if on != "cpu" else 0)
        self.input_name: str = self.session.get_inputs()[0].name
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]

    def _create_session(
        self, ort: Any, providers: list[Any], threads: int | None, cached: CachedGraph | None
    ) -> Any:
        """The session: from the cached optimised graph when there is one, else from the model
        file (saving its optimised graph for the next run when ``cached`` is given)."""

        def options(**settings: Any) -> Any:
            opts = ort.SessionOptions()
            # Errors only: ONNX Runtime's own warnings (e.g. shape merges of a damaged model) would
            # print C++ log lines on stderr before the one line an unloadable model gets.
            opts.log_severity_level = 3
            if threads:
                opts.intra_op_num_threads = int(threads)
            for name, value in settings.items():
                setattr(opts, name, value)
            return opts

        if cached is not None and cached.hit:
            try:
                session = ort.InferenceSession(
                    str(cached.path), options(graph_optimization_level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
                    providers=providers,
                )
            except Exception as err:  # noqa: BLE001 - a damaged cache entry: rebuild it from the model
                _logger.debug("cached graph %s unusable (%s); optimising %s again",
                              cached.path, first_line(err), self.path)
                cached.discard()
            else:
                cached.touch()
                self.graph_from_cache = True
                return session
        if cached is not None:
            try:
                # ONNX Runtime warns (hidden by log_severity_level 3) that a graph saved with the
                # NCHWc layout suits only this machine, which is why the cache key holds the CPU.
                saving = options(optimized_model_filepath=str(cached.writing_path()))
                session = ort.InferenceSession(str(self.path), saving, providers=providers)
            except Exception:  # noqa: BLE001 - perhaps only the saving failed (disk full): once more without
                cached.discard()
            else:
                cached.commit()
                return session
        try:
            return ort.InferenceSession(str(self.path), options(), providers=providers)
        except Exception as err:  # onnxruntime raises Fail/InvalidGraph/RuntimeException...
            raise CheckpointError(f"{self.path}: ONNX Runtime cannot load the model ({first_line(err)})") from None

    # -- provider choice ----------------------------------------------------------------------
    def _requested(
        self, ort: Any, providers: list[str] | None, base: str, device_id: int, trt_fp16: bool | None,
        cache_dir: Path,
    ) -> list[Any]:
        """The providers to ask for, each with its options: ``providers`` or ``device``'s choice."""
        fp16 = self.card.precision == "fp16" if trt_fp16 is None else bool(trt_fp16)
        requested = providers if providers is not None else self._default_providers(ort, base)
        return [self._with_options(p, device_id, fp16, cache_dir) for p in requested]

    def _default_providers(self, ort: Any, base: str) -> list[str]:
        available = set(ort.get_available_providers())
        if base == "cpu":
            return [CPU]
        if base == "cuda":
            return [CUDA, CPU]  # CPU stays as the fallback for ops CUDA has no kernel for
        if base == "tensorrt":
            return [TENSORRT, CUDA, CPU]
        # auto: only providers that can work here, so a CPU machine gets no error spam from
        # onnxruntime-gpu trying to load CUDA libraries for a GPU that does not exist.
        if not cuda_device_count():
            _logger.debug("no CUDA GPU found by the driver: using %s", CPU)
            return [CPU]
        if self.card.precision == "int8":
            # QDQ int8 is quantised for the CPU; the CUDA provider has no int8 convolution and
            # would run it dequantised, slower than the fp32 model.
            _logger.info("int8 model: running on the CPU it was quantised for (pass device='cuda' to force the GPU)")
            return [CPU]
        order = [CUDA, CPU]
        if TENSORRT in available and tensorrt_loadable():
            order.insert(0, TENSORRT)
        return [p for p in order if p in available]

    def _with_options(self, provider: Any, device_id: int, fp16: bool, cache_dir: Path) -> Any:
        """``(name, options)`` for the GPU providers; anything else passes through unchanged."""
        if not isinstance(provider, str):
            return provider  # already (name, options)
        if provider == CUDA:
            return (CUDA, {"device_id": device_id})
        if provider == TENSORRT:
            cache_dir.mkdir(parents=True, exist_ok=True)
            opts: dict[str, Any] = {
                "device_id": device_id,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache_dir),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache_dir),
                "trt_fp16_enable": fp16,
            }
            if self.batch_size_hint:
                # One profile for batches 1..hint (engines are built per profile); __call__
                # chunks larger batches so no shape ever falls outside it.
                h, w = self.preprocessing.input_size
                shape = lambda b: f"{INPUT_NAME}:{b}x3x{h}x{w}"  # noqa: E731
                opts["trt_profile_min_shapes"] = shape(1)
                opts["trt_profile_opt_shapes"] = shape(self.batch_size_hint)
                opts["trt_profile_max_shapes"] = shape(self.batch_size_hint)
            return (TENSORRT, opts)
        return provider

    def _check_device(self, base: str, device: str) -> bool:
        """Refuse a session that is not on the device asked for; True: a fallback was warned of."""
        if base == "auto" and not self.placement.on_gpu and self.card.precision != "int8" and cuda_device_count():
            # auto may fall back, but not silently where a GPU is there to use
            _logger.warning("a GPU is here but ONNX Runtime runs on the CPU: the CUDA provider did not load%s; "
                            "`device=cuda` makes this an error", missing_cuda_hint())
            return True
        if base == "cuda" and not self.placement.on_gpu:
            raise DeviceUnavailableError(
                f"asked for {device} but ONNX Runtime runs on {', '.join(self.providers)} only: no usable GPU / CUDA "
                f"libraries (onnxruntime-gpu needs an NVIDIA driver, CUDA and cuDNN){missing_cuda_hint()}; "
                "use `device=cpu`"
            )
        if base == "tensorrt" and self.placement.device != "tensorrt":
            fallback = "`device=cuda`" if CUDA in self.providers else "`device=cpu`"
            raise DeviceUnavailableError(
                f"asked for {device} but ONNX Runtime runs on {', '.join(self.providers)} only: TensorRT is not usable "
                "here (needs a GPU and TensorRT 10's libnvinfer.so.10: the system's, or NVIDIA's tensorrt-cu13-libs "
                f"10.x package){missing_cuda_hint()}; use {fallback}"
            )
        return False

    # -- inference ----------------------------------------------------------------------------
    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Per-group probabilities of a preprocessed batch.

        Args:
            batch: float32 ``[B, 3, H, W]``, rows made by :attr:`preprocessing`.

        Returns:
            ``{group: [B, n_group] float32}`` in schema order, at :attr:`temperatures`.
        """
        batch = check_batch(batch, self.preprocessing)
        if batch.shape[0] == 0:
            return empty_output(self.schema)
        step = self.batch_size_hint if self.placement.device == "tensorrt" and self.batch_size_hint else batch.shape[0]
        parts = [self._run(batch[i : i + step]) for i in range(0, batch.shape[0], step)]
        outs = parts[0] if len(parts) == 1 else [np.concatenate(cols) for cols in zip(*parts)]
        probs = {name: np.asarray(o, dtype=np.float32) for name, o in zip(self.output_names, outs)}
        return apply_temperatures(probs, self.schema, self.temperatures) if self.temperatures else probs

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        if self._use_io_binding:
            try:
                return self._run_io_binding(batch)
            except Exception as err:  # noqa: BLE001 - keep tagging working; plain run copies too
                _logger.warning("I/O binding failed (%s); falling back to session.run", err)
                self._use_io_binding = False
        return self.session.run(self.output_names, {self.input_name: batch})

    def _run_io_binding(self, batch: np.ndarray) -> list[np.ndarray]:
        """One explicit host->GPU copy in, outputs left on the GPU until copied back once.

        ``session.run`` would also work, but binding avoids the provider's extra staging copies
        and lets outputs be allocated on the device (ONNX Runtime I/O binding docs).
        """
        ort = _import_onnxruntime()
        binding = self.session.io_binding()
        x = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", self.placement.index)
        binding.bind_ortvalue_input(self.input_name, x)
        for name in self.output_names:
            binding.bind_output(name, "cuda", self.placement.index)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, providers={self.providers}, precision={self.card.precision!r})"


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise AttrtagError(f"running .onnx models needs ONNX Runtime: {_PIP_HINT}") from None
    return onnxruntime


def check_output_names(schema: Schema, names: Sequence[str], *, source: str) -> None:
    """Raise unless the graph outputs are exactly the schema's groups, in schema order.

    Raises:
        CheckpointError: "expected outputs [...], got [...]".
    """
    if tuple(names) != schema.names:
        raise CheckpointError(
            f"{source}: output names do not match the schema: expected {list(schema.names)}, got {list(names)}; "
            "re-export the model with 'attrtag export'"
        )


def read_onnx_card(source: "str | os.PathLike[str] | onnxruntime.InferenceSession | onnx.ModelProto") -> ModelCard:
    """Read and check the model card stored in an ONNX model's metadata.

    Args:
        source: a ``.onnx`` path, an ONNX Runtime session or an ``onnx.ModelProto``.

    Returns:
        The card; its schema's groups are checked against the graph's output names.

    Raises:
        CheckpointError: missing file, a file that is not ONNX, missing ``attrtag.*`` metadata
            ("not an attrtag model: missing metadata 'attrtag.schema'") or outputs that do not
            match the schema.
    """
    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        props, outputs = _read_file(Path(source))
    elif hasattr(source, "get_modelmeta"):  # an onnxruntime.InferenceSession
        name = "model"
        props = dict(source.get_modelmeta().custom_metadata_map)
        outputs = [o.name for o in source.get_outputs()]
    elif hasattr(source, "metadata_props") and hasattr(source, "graph"):  # an onnx.ModelProto
        name = "model"
        props = {p.key: p.value for p in source.metadata_props}
        outputs = [o.name for o in source.graph.output]
    else:
        raise TypeError(
            f"read_onnx_card expects a path, an onnxruntime session or an onnx.ModelProto, got {type(source).__name__}"
        )
    card = ModelCard.from_metadata(props, source=name)
    check_output_names(card.schema, outputs, source=name)
    return card


def _read_file(path: Path) -> tuple[dict[str, str], list[str]]:
    """Metadata map and output names of an ONNX file, read without ``onnx`` or a session."""
    if not path.is_file():
        raise CheckpointError(f"{path}: ONNX model not found")
    try:
        return read_metadata_and_outputs(path)
    except OnnxFormatError as err:
        raise CheckpointError(f"{path}: not a readable ONNX file ({err})") from None
